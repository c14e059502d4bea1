"""Patient-level data splits (formats.md §5): ``splits.json`` with a test list and K folds.

Schemes:

* ``kfold`` (default): K folds over all cases, stratified by region, optionally with a held-out test
  fraction taken first (also per region). Seeded; the result depends only on the case ids, their regions,
  the content hashes, K, the seed and the test fraction, never on the order the cases are given in.
* ``nih-cv``: K folds computed separately inside each region (the NIH papers cross-validated the
  mediastinal and abdominal sets separately); fold i of the file is the union of each region's fold i.
  No test set.
* ``nndet``: nnDetection's Task046 (MED) / Task047 (ABD) hold-out split and its 5 CV folds, reproduced
  bit for bit (ct-lymph-nodes-dataset.md §4): per region, ``train_test_split(sorted ids, test_size=0.3,
  random_state=0, shuffle=True)`` and ``KFold(5, shuffle=True, random_state=12345)`` over the sorted
  training ids. Implemented with numpy's ``RandomState`` exactly as scikit-learn does it (no sklearn
  dependency); the test suite checks the ids against the lists in the spec.

Duplicated volumes (identical ``content_hashes`` in dataset.json; the spec reports 25 MED/ABD duplicates)
are kept together: in ``kfold`` and ``nih-cv`` every group of identical volumes is one unit and always lands
in the same fold (or all in test). ``nndet`` reproduces nnDetection and therefore cannot move them; it
reports where they landed instead. Pooling regions with duplicates present produces a warning.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from lymphcad import atomic
from lymphcad.cohort import FORMAT_VERSION
from lymphcad.errors import InputError, UsageError

SCHEMES: Final = ("kfold", "nih-cv", "nndet")

#: nnDetection's settings (nndet/io/prepare.py create_test_split; nndet/io/datamodule/base.py)
NNDET_TEST_SIZE: Final = 0.3
NNDET_TEST_SEED: Final = 0
NNDET_FOLDS: Final = 5
NNDET_KFOLD_SEED: Final = 12345
#: nnDetection's tasks select cases by folder-name prefix
NNDET_TASKS: Final = {
    "mediastinal": ("Task046_TCIAMedLymphNodesAQIIDCNM", "MED"),
    "abdominal": ("Task047_TCIAAbdLymphNodesAQIIDCNM", "ABD"),
}


@dataclass
class Splits:
    """A split of case ids into a test list and K (train, val) folds."""

    scheme: str
    seed: int
    test: list[str]
    folds: list[dict[str, list[str]]]
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """formats.md §5 form: every list sorted; extra keys after the required ones."""
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "scheme": self.scheme,
            "seed": self.seed,
            "test": sorted(self.test),
            "folds": [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in self.folds],
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def fold_of(self, case_id: str) -> int | None:
        """Index of the fold whose val holds ``case_id``; None for a test case (KeyError if absent)."""
        if case_id in self.test:
            return None
        for i, f in enumerate(self.folds):
            if case_id in f["val"]:
                return i
        raise KeyError(case_id)


# -- scikit-learn-equivalent primitives -------------------------------------------------------------
def sklearn_train_test_split(
    ids: Sequence[str], *, test_size: float, random_state: int
) -> tuple[list[str], list[str]]:
    """``sklearn.model_selection.train_test_split(ids, test_size=..., random_state=..., shuffle=True)``.

    sklearn: n_test = ceil(test_size·n), n_train = n − n_test; test = the first n_test entries of
    ``RandomState(random_state).permutation(n)``, train the next n_train. Returns (train, test) in that
    permutation order (callers sort).
    """
    n = len(ids)
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(random_state).permutation(n)
    test = [ids[i] for i in perm[:n_test]]
    train = [ids[i] for i in perm[n_test:]]
    return train, test


def sklearn_kfold(ids: Sequence[str], *, n_splits: int, random_state: int) -> list[list[str]]:
    """Validation sets of ``sklearn.model_selection.KFold(n_splits, shuffle=True, random_state)`` on ``ids``."""
    n = len(ids)
    if n_splits < 2 or n_splits > n:
        raise UsageError(f"cannot make {n_splits} folds from {n} cases")
    indices = np.arange(n)
    np.random.RandomState(random_state).shuffle(indices)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    out, start = [], 0
    for size in sizes:
        out.append([ids[i] for i in indices[start : start + size]])
        start += size
    return out


# -- duplicates ---------------------------------------------------------------------------------------
def duplicate_groups(cases: Sequence[str], content_hashes: Mapping[str, str] | None) -> list[list[str]]:
    """Groups (size ≥ 2, sorted) of cases whose volumes have identical content hashes."""
    if not content_hashes:
        return []
    by_hash: dict[str, list[str]] = defaultdict(list)
    for c in sorted(cases):
        h = content_hashes.get(c)
        if h:
            by_hash[h].append(c)
    return sorted(g for g in by_hash.values() if len(g) > 1)


def _units(
    cases: Sequence[str], regions: Mapping[str, str], content_hashes: Mapping[str, str] | None
) -> dict[str, list[list[str]]]:
    """Cases grouped into indivisible units (duplicate groups or single cases), keyed by stratum (region)."""
    grouped: set[str] = set()
    units: dict[str, list[list[str]]] = defaultdict(list)
    for g in duplicate_groups(cases, content_hashes):
        rs = {regions.get(c, "") for c in g}
        units[rs.pop() if len(rs) == 1 else "mixed"].append(g)
        grouped.update(g)
    for c in sorted(cases):
        if c not in grouped:
            units[regions.get(c, "") or "unknown"].append([c])
    for s in units:
        units[s].sort()
    return dict(sorted(units.items()))


def _deal(units: list[list[str]], k: int, counts: list[int], rng: np.random.Generator) -> list[list[str]]:
    """Shuffle units and deal each to the fold with the fewest cases so far (ties: lowest index)."""
    order = rng.permutation(len(units))
    # big units first keeps folds balanced; stable for equal sizes (keeps the shuffled order)
    ordered = sorted((units[i] for i in order), key=len, reverse=True)
    out: list[list[str]] = [[] for _ in range(k)]
    for unit in ordered:
        f = min(range(k), key=lambda i: (counts[i], i))
        out[f].extend(unit)
        counts[f] += len(unit)
    return out


def _stratum_seed(seed: int, stratum: str) -> np.random.Generator:
    # independent, order-free stream per stratum
    return np.random.default_rng([seed, *stratum.encode()])


def _folds_from_val(
    cases: Sequence[str], test: Sequence[str], vals: list[list[str]]
) -> list[dict[str, list[str]]]:
    pool = sorted(set(cases) - set(test))
    folds = []
    for val in vals:
        vs = set(val)
        folds.append({"train": [c for c in pool if c not in vs], "val": sorted(val)})
    return folds


def _dup_warning(groups: list[list[str]], regions: Mapping[str, str]) -> list[str]:
    cross = [g for g in groups if len({regions.get(c) for c in g}) > 1]
    if not groups:
        return []
    msg = (
        f"{len(groups)} group(s) of identical volumes ({sum(len(g) for g in groups)} cases; "
        f"{len(cross)} group(s) span regions, e.g. {', '.join(groups[0])}); they are kept in the same fold, "
        "but pooled metrics count each duplicate separately: de-duplicate before pooling regions"
    )
    return [msg]


# -- schemes ------------------------------------------------------------------------------------------
def kfold(
    cases: Sequence[str],
    regions: Mapping[str, str],
    *,
    folds: int,
    seed: int,
    test_fraction: float = 0.0,
    content_hashes: Mapping[str, str] | None = None,
) -> Splits:
    """Patient-level K folds stratified by region, with an optional held-out test fraction per region."""
    if folds < 2:
        raise UsageError(f"--folds must be at least 2 (got {folds})")
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be in [0, 1) (got {test_fraction})")
    strata = _units(cases, regions, content_hashes)
    test: list[str] = []
    counts = [0] * folds
    vals: list[list[str]] = [[] for _ in range(folds)]
    for stratum, units in strata.items():
        rng = _stratum_seed(seed, stratum)
        order = list(rng.permutation(len(units)))
        n_cases = sum(len(u) for u in units)
        want_test = round(test_fraction * n_cases)
        rest = []
        taken = 0
        for i in order:
            if taken < want_test:
                test.extend(units[i])
                taken += len(units[i])
            else:
                rest.append(units[i])
        dealt = _deal(rest, folds, counts, rng)
        for f in range(folds):
            vals[f].extend(dealt[f])
    n_pool = len(cases) - len(test)
    if n_pool < folds:
        raise UsageError(f"cannot make {folds} folds from {n_pool} cases")
    groups = duplicate_groups(cases, content_hashes)
    pooled = len({regions.get(c) for c in cases}) > 1
    warnings = _dup_warning(groups, regions) if pooled else []
    extra: dict[str, Any] = {"test_fraction": test_fraction, "stratified_by": "region"}
    if groups:
        extra["duplicate_groups"] = groups
    return Splits("kfold", seed, test, _folds_from_val(cases, test, vals), warnings, extra)


def nih_cv(
    cases: Sequence[str],
    regions: Mapping[str, str],
    *,
    folds: int,
    seed: int,
    content_hashes: Mapping[str, str] | None = None,
) -> Splits:
    """K folds made separately in each region; fold i = union of every region's fold i. No test set."""
    if folds < 2:
        raise UsageError(f"--folds must be at least 2 (got {folds})")
    if len(cases) < folds:
        raise UsageError(f"cannot make {folds} folds from {len(cases)} cases")
    strata = _units(cases, regions, content_hashes)
    vals: list[list[str]] = [[] for _ in range(folds)]
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * folds)
    notes: list[str] = []

    def region(c: str) -> str:
        return regions.get(c, "") or "unknown"

    # groups of identical volumes spanning regions first: one fold for the whole group, balanced over
    # the regions it touches; then each region's own units, balanced within the region
    mixed = strata.pop("mixed", [])
    rng = _stratum_seed(seed, "mixed")
    for i in rng.permutation(len(mixed)):
        unit = mixed[i]
        f = min(range(folds), key=lambda f: (sum(counts[region(c)][f] for c in unit), f))
        vals[f].extend(unit)
        for c in unit:
            counts[region(c)][f] += 1
    for stratum, units in strata.items():
        n = sum(len(u) for u in units) + sum(counts[stratum])
        if n < folds:
            notes.append(
                f"region {stratum!r} has {n} case(s), fewer than {folds} folds: some folds have none of it"
            )
        dealt = _deal(units, folds, counts[stratum], _stratum_seed(seed, stratum))
        for f in range(folds):
            vals[f].extend(dealt[f])
    per_region: dict[str, list[list[str]]] = defaultdict(lambda: [[] for _ in range(folds)])
    for f in range(folds):
        for c in vals[f]:
            per_region[region(c)][f].append(c)
    per_region = {r: [sorted(v) for v in fl] for r, fl in sorted(per_region.items())}
    groups = duplicate_groups(cases, content_hashes)
    pooled = len({regions.get(c) for c in cases}) > 1
    warnings = notes + (_dup_warning(groups, regions) if pooled else [])
    extra: dict[str, Any] = {"region_folds": per_region}
    if groups:
        extra["duplicate_groups"] = groups
    return Splits("nih-cv", seed, [], _folds_from_val(cases, [], vals), warnings, extra)


def nndet(
    cases: Sequence[str],
    *,
    content_hashes: Mapping[str, str] | None = None,
    expected_counts: Mapping[str, int] | None = None,
) -> Splits:
    """nnDetection's per-region 70/30 split and 5-fold CV on the training part (spec §4.1-4.3).

    Cases are assigned to a task by id prefix (``MED``/``ABD``, as nnDetection filters folder names).
    Fold i of the file = the union of Task046's and Task047's fold i (each task trains on its own).
    ``expected_counts`` (region → n, default 90/86) only adds a warning when a region differs, because the
    split then no longer matches the published one.
    """
    expected = {"mediastinal": 90, "abdominal": 86} if expected_counts is None else dict(expected_counts)
    test: list[str] = []
    vals: list[list[str]] = [[] for _ in range(NNDET_FOLDS)]
    per_task: dict[str, Any] = {}
    warnings: list[str] = []
    unassigned = sorted(c for c in cases if not c.startswith(("MED", "ABD")))
    if unassigned:
        raise InputError(
            f"scheme nndet selects cases by the prefixes MED/ABD; {len(unassigned)} case(s) have neither "
            f"(e.g. {unassigned[0]})"
        )
    for region, (task, prefix) in NNDET_TASKS.items():
        ids = sorted(c for c in cases if c.startswith(prefix))
        if not ids:
            continue
        if region in expected and len(ids) != expected[region]:
            warnings.append(
                f"{task}: {len(ids)} cases instead of {expected[region]}; the split differs from nnDetection's"
            )
        train, tst = sklearn_train_test_split(ids, test_size=NNDET_TEST_SIZE, random_state=NNDET_TEST_SEED)
        train_sorted = sorted(train)
        fold_vals = sklearn_kfold(train_sorted, n_splits=NNDET_FOLDS, random_state=NNDET_KFOLD_SEED)
        test.extend(tst)
        for f in range(NNDET_FOLDS):
            vals[f].extend(fold_vals[f])
        per_task[task] = {
            "region": region,
            "test": sorted(tst),
            "folds": [{"train": sorted(set(train_sorted) - set(v)), "val": sorted(v)} for v in fold_vals],
        }
    splits = Splits(
        "nndet",
        NNDET_TEST_SEED,
        test,
        _folds_from_val(cases, test, vals),
        warnings,
        {
            "kfold_seed": NNDET_KFOLD_SEED,
            "test_size": NNDET_TEST_SIZE,
            "tasks": per_task,
            "note": "nnDetection trains each task separately; fold i pools Task046/Task047 fold i",
        },
    )
    groups = duplicate_groups(cases, content_hashes)
    if groups:
        split_apart = [
            g for g in groups if len({("test" if c in splits.test else splits.fold_of(c)) for c in g}) > 1
        ]
        splits.extra["duplicate_groups"] = groups
        if split_apart:
            splits.warnings.append(
                f"{len(split_apart)} group(s) of identical volumes fall in different folds/test under nnDetection's "
                f"per-region split (e.g. {', '.join(split_apart[0])}); harmless while MED and ABD are trained "
                "separately, a leak if the regions are pooled"
            )
    return splits


def make_splits(
    scheme: str,
    cases: Sequence[str],
    regions: Mapping[str, str],
    *,
    folds: int = 5,
    seed: int = 0,
    test_fraction: float = 0.0,
    content_hashes: Mapping[str, str] | None = None,
) -> Splits:
    """Dispatch on ``scheme`` (see the module docstring)."""
    if scheme == "kfold":
        return kfold(
            cases, regions, folds=folds, seed=seed, test_fraction=test_fraction, content_hashes=content_hashes
        )
    if scheme == "nih-cv":
        if test_fraction:
            raise UsageError("--test-fraction is not used by scheme nih-cv (it has no test set)")
        return nih_cv(cases, regions, folds=folds, seed=seed, content_hashes=content_hashes)
    if scheme == "nndet":
        return nndet(cases, content_hashes=content_hashes)
    raise UsageError(f"unknown scheme {scheme!r} (choose from {', '.join(SCHEMES)})")


# -- files --------------------------------------------------------------------------------------------
def validate(
    data: Mapping[str, Any], cases: Sequence[str] | None = None, path: str | Path | None = None
) -> None:
    """Check a splits.json object: keys, sorted lists, every case in exactly one of test / some val."""
    for key in ("format_version", "scheme", "seed", "test", "folds"):
        if key not in data:
            raise InputError(f"missing key {key!r}", path)
    if data["scheme"] not in SCHEMES:
        raise InputError(f"scheme {data['scheme']!r} is not one of {SCHEMES}", path)
    seen: dict[str, str] = {}
    for c in data["test"]:
        seen[c] = "test"
    lists = [("test", data["test"])]
    for i, f in enumerate(data["folds"]):
        lists += [(f"folds[{i}].train", f["train"]), (f"folds[{i}].val", f["val"])]
        for c in f["val"]:
            if c in seen:
                raise InputError(f"case {c!r} is in {seen[c]} and in folds[{i}].val", path)
            seen[c] = f"folds[{i}].val"
        overlap = set(f["train"]) & set(f["val"])
        if overlap:
            raise InputError(f"folds[{i}] has {sorted(overlap)[0]!r} in both train and val", path)
        if set(f["train"]) & set(data["test"]):
            raise InputError(f"folds[{i}].train holds a test case", path)
    for name, values in lists:
        if list(values) != sorted(values):
            raise InputError(f"{name} is not sorted", path)
    if cases is not None:
        missing = sorted(set(cases) - set(seen))
        unknown = sorted(set(seen) - set(cases))
        if unknown:
            raise InputError(f"splits name unknown case {unknown[0]!r}", path)
        if missing:
            raise InputError(f"case {missing[0]!r} is neither in test nor in any fold's val", path)


def write_splits(path: str | Path, splits: Splits) -> None:
    """Write splits.json atomically (validated first)."""
    data = splits.to_json()
    validate(data)
    atomic.write_json(path, data)


def _read_object(path: Path) -> dict[str, Any]:
    """The JSON object in a splits.json (InputError naming the file otherwise)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read splits ({exc.strerror})", path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    if not isinstance(data, dict):
        raise InputError("splits.json must hold a JSON object", path)
    return data


def read_splits(path: str | Path, cases: Sequence[str] | None = None) -> dict[str, Any]:
    """Read and validate a splits.json."""
    path = Path(path)
    data = _read_object(path)
    validate(data, cases, path)
    return data


def read_fold(path: str | Path, fold: int) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) case lists, sorted, of one fold of a splits.json (formats.md §5).

    Only what training needs is checked (a ``folds`` list, the fold's ``train``/``val`` lists, no case in
    both train and val/test), so a hand-written file with just ``folds`` (and ``test``) is accepted.
    """
    path = Path(path)
    data = _read_object(path)
    folds = data.get("folds")
    if not isinstance(folds, list) or not folds:
        raise InputError("splits.json has no 'folds' list", path)
    if not 0 <= fold < len(folds):
        raise InputError(f"fold {fold} does not exist (the file has folds 0..{len(folds) - 1})", path)
    f = folds[fold]
    try:
        train = [str(c) for c in f["train"]]
        val = [str(c) for c in f.get("val", [])]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"fold {fold} must hold 'train' and 'val' lists", path) from exc
    test = [str(c) for c in data.get("test", [])]
    overlap = (set(train) & set(val)) | (set(train) & set(test))
    if overlap:
        raise InputError(f"fold {fold}: cases both in train and val/test: {sorted(overlap)[:3]}", path)
    return sorted(train), sorted(val), sorted(test)


def split_cohort(
    cohort: str | Path,
    *,
    scheme: str = "kfold",
    folds: int = 5,
    seed: int = 0,
    test_fraction: float = 0.0,
    out: str | Path | None = None,
) -> tuple[Path, Splits]:
    """Read COHORT/dataset.json, make the split and write COHORT/splits.json (or ``out``)."""
    from lymphcad.cohort import read_dataset_json

    info = read_dataset_json(cohort)
    splits = make_splits(
        scheme,
        sorted(info.cases),
        info.case_regions,
        folds=folds,
        seed=seed,
        test_fraction=test_fraction,
        content_hashes=info.content_hashes,
    )
    target = Path(out) if out is not None else Path(cohort) / "splits.json"
    write_splits(target, splits)
    return target, splits
