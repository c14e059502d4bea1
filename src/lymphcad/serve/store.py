"""The review log: ``review.csv`` (formats.md §6), one row per decision, appended in time order.

The file is the state. Every decision rewrites it atomically (:mod:`lymphcad.atomic`) under a lock, so a
killed server loses nothing it acknowledged and two browser tabs never overwrite each other's decisions:
each decision is appended to the one log. The reviewed result of a finding is its last decision that was
not undone (an ``undo`` cancels the finding's most recent remaining decision).
"""

from __future__ import annotations

import csv
import datetime as _dt
import enum
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lymphcad import atomic
from lymphcad.errors import InputError
from lymphcad.io.detections import parse_number

REVIEW_COLUMNS: Final = (
    "case_id",
    "finding_id",
    "action",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "probability",
    "reader",
    "time",
)


class Action(enum.Enum):
    """What a reader did to a finding."""

    ACCEPT = "accept"
    REJECT = "reject"
    ADD = "add"
    UNDO = "undo"


@dataclass(frozen=True)
class ReviewRow:
    """One decision (a row of review.csv). Centre in world LPS mm."""

    case_id: str
    finding_id: str
    action: Action
    center_xyz: tuple[float, float, float]
    diameter_mm: float | None
    probability: float | None
    reader: str
    time: str


@dataclass(frozen=True)
class FindingDecision:
    """The standing decision on one finding (findings without one are undecided) and who made it when."""

    finding_id: str
    decision: Action
    center_xyz: tuple[float, float, float]
    diameter_mm: float | None
    reader: str
    time: str


def utc_now() -> str:
    """ISO 8601 UTC time with milliseconds, e.g. ``2026-12-07T08:30:00.123Z``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def reviewed(rows: Iterable[ReviewRow]) -> dict[str, FindingDecision]:
    """Fold one case's decisions (time order) into each decided finding's standing decision."""
    stacks: dict[str, list[ReviewRow]] = {}
    for row in rows:
        stack = stacks.setdefault(row.finding_id, [])
        if row.action is Action.UNDO:
            if stack:
                stack.pop()
        else:
            stack.append(row)
    out: dict[str, FindingDecision] = {}
    for fid, stack in stacks.items():
        if stack:
            top = stack[-1]
            # an added finding keeps the centre and size it was added with
            origin = next((r for r in stack if r.action is Action.ADD), top)
            out[fid] = FindingDecision(
                fid, top.action, origin.center_xyz, origin.diameter_mm, top.reader, top.time
            )
    return out


def read_review(path: str | Path, *, known_cases: Iterable[str] | None = None) -> list[ReviewRow]:
    """Read review.csv; a bad row raises InputError naming the file and line."""
    path = Path(path)
    known = None if known_cases is None else set(known_cases)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read review log ({exc.strerror})", path) from exc
    rows: list[ReviewRow] = []
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return rows
        if tuple(header) != REVIEW_COLUMNS:
            raise InputError(f"header must be {','.join(REVIEW_COLUMNS)}", path, 1)
        for line, cells in enumerate(reader, start=2):
            if len(cells) != len(REVIEW_COLUMNS):
                raise InputError(f"expected {len(REVIEW_COLUMNS)} columns, got {len(cells)}", path, line)
            rec = dict(zip(REVIEW_COLUMNS, cells, strict=True))
            if known is not None and rec["case_id"] not in known:
                raise InputError(f"unknown case id {rec['case_id']!r} (not in the cohort)", path, line)
            try:
                action = Action(rec["action"])
            except ValueError:
                raise InputError(
                    f"action {rec['action']!r} is not accept/reject/add/undo", path, line
                ) from None
            fid = rec["finding_id"]
            if len(fid) < 2 or fid[0] not in "da" or not fid[1:].isdigit():
                raise InputError(f"finding_id {fid!r} is not d<n> or a<n>", path, line)
            xyz = (
                parse_number(rec["coordX"], "coordX", path, line),
                parse_number(rec["coordY"], "coordY", path, line),
                parse_number(rec["coordZ"], "coordZ", path, line),
            )
            diam = parse_number(rec["diameter_mm"], "diameter_mm", path, line) if rec["diameter_mm"] else None
            prob = parse_number(rec["probability"], "probability", path, line) if rec["probability"] else None
            rows.append(ReviewRow(rec["case_id"], fid, action, xyz, diam, prob, rec["reader"], rec["time"]))
    return rows


def write_review(path: str | Path, rows: Iterable[ReviewRow]) -> None:
    """Write review.csv atomically (rows in the order given: time order)."""
    atomic.write_csv(
        path,
        REVIEW_COLUMNS,
        (
            [
                r.case_id,
                r.finding_id,
                r.action.value,
                *(f"{v:.3f}" for v in r.center_xyz),
                _fmt(r.diameter_mm, 2),
                _fmt(r.probability, 6),
                r.reader,
                r.time,
            ]
            for r in rows
        ),
    )


class ReviewStore:
    """The review log of one serve session's output folder, kept in memory and on disk (thread-safe)."""

    def __init__(self, path: str | Path, *, known_cases: Iterable[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._rows: list[ReviewRow] = []
        if self.path.is_file():
            self._rows = read_review(self.path, known_cases=known_cases)

    def rows(self, case_id: str | None = None) -> list[ReviewRow]:
        """All decisions (of one case), in time order."""
        with self._lock:
            return [r for r in self._rows if case_id is None or r.case_id == case_id]

    def revision(self, case_id: str) -> int:
        """Number of decisions recorded for a case (grows with every decision; tabs poll it)."""
        with self._lock:
            return sum(r.case_id == case_id for r in self._rows)

    def next_added_id(self, case_id: str) -> str:
        """The id the next added finding of this case gets (``a<n>``)."""
        with self._lock:
            return self._next_added_id(case_id)

    def _next_added_id(self, case_id: str) -> str:
        used = [int(r.finding_id[1:]) for r in self._rows if r.case_id == case_id and r.finding_id[0] == "a"]
        return f"a{max(used, default=0) + 1}"

    def record(
        self,
        case_id: str,
        finding_id: str | None,
        action: Action,
        center_xyz: tuple[float, float, float],
        *,
        diameter_mm: float | None,
        probability: float | None,
        reader: str,
    ) -> ReviewRow:
        """Append one decision and rewrite the log atomically; ``finding_id`` None = a new added finding."""
        with self._lock:
            fid = self._next_added_id(case_id) if finding_id is None else finding_id
            row = ReviewRow(case_id, fid, action, center_xyz, diameter_mm, probability, reader, utc_now())
            rows = [*self._rows, row]
            write_review(self.path, rows)  # on disk before it is acknowledged
            self._rows = rows
            return row
