"""Helpers for the DICOM SR/SEG tests: the real series used, the validators, an independent geometry.

The series (../shared/data/real-ct, see SOURCES.md): GE LightSpeed16 uncompressed (CRLM-CT-1004), Philips
Brilliance 16P implicit VR (LIDC-IDRI-0314 subset), Siemens Sensation 16 uint16 with an empty clinical
trial subject ID (ACRIN-FLT-Breast 013) and Siemens Biograph JPEG 2000 lossless with its files in reverse
z order (TotalSegmentator). The TotalSegmentator files have empty Study/Series/SOP Instance UIDs, which no
SR can reference, so the test uses a copy with the UIDs filled in (pixels untouched, still JPEG 2000).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

DCIODVFY = Path("/usr/bin/dciodvfy")
PIXELMED = Path("/usr/share/java/pixelmed.jar")
JAVA = shutil.which("java")
#: JDK 17's XPath limits are too small for PixelMed's compiled template rules; C1-only JIT halves the time
#: of these short-lived JVMs.
PIXELMED_JAVA_FLAGS = (
    "-XX:TieredStopAtLevel=1",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)

SERIES = {
    "ge-crlm": "crlm-ct/CRLM-CT-1004",
    "philips-lidc": "mirp-lidc-idri-0314",
    "siemens-acrin": "acrin-flt-breast/013-chest",
    "siemens-j2k-reversed": "totalsegmentator/example_ct_dicom",
}


def series_folder(real_ct_dir: Path, key: str, tmp: Path) -> Path:
    """The folder of one test series (the TotalSegmentator one as a UID-repaired copy in ``tmp``)."""
    folder = real_ct_dir / SERIES[key]
    if key != "siemens-j2k-reversed":
        return folder
    out = tmp / "totalsegmentator-uids"
    if out.is_dir():
        return out
    out.mkdir(parents=True)
    study = generate_uid(entropy_srcs=["lymphcad test", "totalsegmentator study"])
    series = generate_uid(entropy_srcs=["lymphcad test", "totalsegmentator series"])
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(out / f.name, enforce_file_format=True)
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines for a file (it reports on stderr)."""
    if not DCIODVFY.exists():
        pytest.skip(f"dciodvfy not installed ({DCIODVFY}; Debian: dicom3tools)")
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("Error")]


def pixelmed_sr_errors(paths: list[Path]) -> dict[Path, list[str]]:
    """PixelMed DicomSRValidator's error lines per SR file (the validators run side by side)."""
    if JAVA is None or not PIXELMED.exists():
        pytest.skip("PixelMed or java not installed (Debian: libpixelmed-java, default-jre-headless)")
    procs = {
        p: subprocess.Popen(
            [
                JAVA,
                *PIXELMED_JAVA_FLAGS,
                "-cp",
                str(PIXELMED),
                "com.pixelmed.validate.DicomSRValidator",
                str(p),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in paths
    }
    out: dict[Path, list[str]] = {}
    for p, proc in procs.items():
        text, _ = proc.communicate(timeout=600)
        assert "IOD validation complete" in text, f"PixelMed did not finish on {p}: {text[-2000:]}"
        out[p] = [line for line in text.splitlines() if line.startswith("Error")]
    return out


def pixel_to_world(ds: Dataset, col: NDArray[np.float64], row: NDArray[np.float64]) -> NDArray[np.float64]:
    """World LPS mm of pixel centres (column, row indices) — PS3.3 C.7.6.2.1.1, written out here on purpose
    (not lymphcad.geometry) as an independent check."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    return (
        ipp[None, :]
        + np.asarray(col, dtype=float).reshape(-1, 1) * col_sp * iop[None, :3]
        + np.asarray(row, dtype=float).reshape(-1, 1) * row_sp * iop[None, 3:]
    )


def plane_distance(ds: Dataset, xyz: NDArray[np.float64]) -> float:
    """Signed distance (mm) of a world point from a slice's plane."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    n = np.cross(iop[:3], iop[3:])
    return float((np.asarray(xyz) - np.asarray([float(v) for v in ds.ImagePositionPatient])) @ n)
