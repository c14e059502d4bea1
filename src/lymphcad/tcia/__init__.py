"""The TCIA "CT Lymph Nodes" collection: NBIA REST client, download, annotation archives, cohort preparation.

Specification: ../shared/docs/ct-lymph-nodes-dataset.md. What the code checks on the data, and what it
found, is written up in docs/tcia.md.
"""

from __future__ import annotations

COLLECTION = "CT Lymph Nodes"
