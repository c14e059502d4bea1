"""The review API's request and response bodies (pydantic). Positions: world LPS mm and display (z, y, x)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["accept", "reject", "add"]
Status = Literal["new", "in progress", "done"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class CaseSummary(_Out):
    """One row of the case list."""

    case_id: str
    region: str
    n_detections: int
    n_above: int = Field(description="detections at or above the threshold")
    n_truth: int = Field(description="ground-truth nodes in annotations.csv")
    n_reviewed: int = Field(description="detections at or above the threshold with a decision")
    n_added: int
    status: Status


class CohortOut(_Out):
    """The cohort, its terms of use and the review settings."""

    name: str
    source: str
    license: str
    citation: list[str]
    threshold: float
    reader: str
    detections: str | None
    review_log: str
    cases: list[CaseSummary]


class FindingOut(_Out):
    """A detection or an added finding with its standing decision."""

    finding_id: str
    kind: Literal["detection", "added"]
    center_xyz: tuple[float, float, float]
    center_zyx: tuple[float, float, float] = Field(description="display-array position (z, y, x)")
    probability: float | None
    diameter_mm: float | None
    decision: Decision | None
    reader: str
    time: str


class TruthOut(_Out):
    """A ground-truth node (annotations.csv)."""

    node_id: int
    center_xyz: tuple[float, float, float]
    center_zyx: tuple[float, float, float]
    short_axis_mm: float | None
    long_axis_mm: float | None


class CaseState(_Out):
    """A case's findings and decisions; ``revision`` grows with every decision (tabs poll it)."""

    case_id: str
    revision: int
    findings: list[FindingOut]


class CaseOut(CaseState):
    """Everything the viewer needs about a case except the voxels."""

    region: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    downsample_z: int
    notice: str | None
    truth: list[TruthOut]


class DecisionIn(BaseModel):
    """A reader's decision: accept/reject/undo a finding, or add one at a display position."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "reject", "add", "undo"]
    finding_id: str | None = Field(default=None, pattern=r"^[da][0-9]{1,6}$")
    center_zyx: tuple[float, float, float] | None = None
    diameter_mm: float | None = Field(default=None, gt=0, le=300)


class ExportOut(_Out):
    """What an export wrote."""

    files: list[str]
    n_accepted: int
    n_added: int
    n_rejected: int
    sr: str
