"""Readers and writers for CT images (NIfTI, DICOM) and the project's interchange files."""
