"""Batch runs at archive scale: one task per case on a serial, local-process or Ray executor, resumable.

:mod:`lymphcad.batch.engine` runs tasks and keeps finished cases on disk; :mod:`lymphcad.batch.executors`
holds the executors; :mod:`lymphcad.batch.detect` is ``detect`` over many CTs. ``prepare`` uses the same
engine and executors (:mod:`lymphcad.tcia.prepare`).
"""
