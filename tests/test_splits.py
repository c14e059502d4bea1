"""splits.json: kfold (stratified by region), nih-cv, and nnDetection's split reproduced exactly (spec §4)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lymphcad.cohort import DatasetInfo
from lymphcad.errors import InputError, UsageError
from lymphcad.splits import kfold, make_splits, nndet, read_splits, validate

MED = [f"MED_LYMPH_{i:03d}" for i in range(1, 91)]
ABD = [f"ABD_LYMPH_{i:03d}" for i in range(1, 87)]
ALL = MED + ABD
REGIONS = {c: ("mediastinal" if c.startswith("MED") else "abdominal") for c in ALL}


def _ids(prefix: str, numbers: str) -> list[str]:
    return [f"{prefix}_LYMPH_{n}" for n in numbers.split()]


# spec §4.2 and §4.3, verbatim
MED_TEST = _ids(
    "MED",
    "003 007 008 009 014 017 023 025 027 031 034 042 043 044 046 049 054 055 057 062 064 067 074 078 079 081 090",
)
ABD_TEST = _ids(
    "ABD",
    "003 007 008 009 014 017 023 025 027 031 034 042 043 044 046 049 054 055 057 058 061 063 067 069 075 086",
)
MED_VAL = [
    _ids("MED", "006 011 030 032 037 038 045 048 060 066 068 070 077"),
    _ids("MED", "004 013 019 029 033 036 052 063 065 069 071 075 082"),
    _ids("MED", "001 005 010 022 035 040 047 050 073 076 080 083 085"),
    _ids("MED", "012 015 016 018 020 024 026 028 039 058 059 084"),
    _ids("MED", "002 021 041 051 053 056 061 072 086 087 088 089"),
]
ABD_VAL = [
    _ids("ABD", "011 032 033 045 048 052 065 068 070 072 076 079"),
    _ids("ABD", "004 013 019 029 030 036 037 038 060 062 066 073"),
    _ids("ABD", "001 005 006 010 022 040 047 050 071 077 078 081"),
    _ids("ABD", "012 015 016 018 020 024 026 028 035 039 059 080"),
    _ids("ABD", "002 021 041 051 053 056 064 074 082 083 084 085"),
]


def test_nndet_reproduces_spec_lists() -> None:
    shuffled = ALL[:]
    random.Random(1).shuffle(shuffled)  # input order must not matter
    s = nndet(shuffled)
    data = s.to_json()
    validate(data, ALL)
    assert data["scheme"] == "nndet"
    tasks = data["tasks"]
    med, abd = tasks["Task046_TCIAMedLymphNodesAQIIDCNM"], tasks["Task047_TCIAAbdLymphNodesAQIIDCNM"]
    assert med["test"] == MED_TEST and len(MED_TEST) == 27
    assert abd["test"] == ABD_TEST and len(ABD_TEST) == 26
    for f in range(5):
        assert med["folds"][f]["val"] == MED_VAL[f]
        assert abd["folds"][f]["val"] == ABD_VAL[f]
        assert data["folds"][f]["val"] == sorted(MED_VAL[f] + ABD_VAL[f])
        assert set(med["folds"][f]["train"]) == set(MED) - set(MED_TEST) - set(MED_VAL[f])
    assert data["test"] == sorted(MED_TEST + ABD_TEST)
    assert not s.warnings


def test_nndet_warns_when_cases_missing() -> None:
    s = nndet(ALL[1:])
    assert any("89 cases instead of 90" in w for w in s.warnings)
    with pytest.raises(InputError, match="MED/ABD"):
        nndet(["phantom_001", *MED])


def test_nndet_reports_duplicates_split_apart() -> None:
    hashes = {c: c for c in ALL}
    hashes["ABD_LYMPH_003"] = hashes["MED_LYMPH_006"] = "same"  # ABD test vs MED fold 0
    s = nndet(ALL, content_hashes=hashes)
    assert s.extra["duplicate_groups"] == [["ABD_LYMPH_003", "MED_LYMPH_006"]]
    assert any("fall in different folds" in w for w in s.warnings)


def _check_partition(data: dict[str, object], cases: list[str]) -> None:
    validate(data, cases)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_kfold_stratified_balanced_deterministic(k: int) -> None:
    s = kfold(ALL, REGIONS, folds=k, seed=7)
    data = s.to_json()
    _check_partition(data, ALL)
    assert data["test"] == [] and len(data["folds"]) == k
    sizes = [len(f["val"]) for f in data["folds"]]
    assert max(sizes) - min(sizes) <= 1
    for f in data["folds"]:
        n_med = sum(c.startswith("MED") for c in f["val"])
        assert abs(n_med - 90 / k) <= 1.0  # stratified by region
        assert sorted(f["train"] + f["val"]) == sorted(ALL)
    shuffled = ALL[::-1]
    assert kfold(shuffled, REGIONS, folds=k, seed=7).to_json() == data
    assert kfold(ALL, REGIONS, folds=k, seed=8).to_json() != data


def test_kfold_test_fraction() -> None:
    s = kfold(ALL, REGIONS, folds=5, seed=0, test_fraction=0.2)
    data = s.to_json()
    _check_partition(data, ALL)
    assert sum(c.startswith("MED") for c in data["test"]) == 18
    assert sum(c.startswith("ABD") for c in data["test"]) == 17
    for f in data["folds"]:
        assert not set(f["train"]) & set(data["test"])
    with pytest.raises(UsageError):
        kfold(ALL, REGIONS, folds=5, seed=0, test_fraction=1.0)
    with pytest.raises(UsageError):
        kfold(ALL, REGIONS, folds=1, seed=0)


@pytest.mark.parametrize("scheme", ["kfold", "nih-cv"])
def test_duplicates_share_a_fold_and_pooling_warns(scheme: str) -> None:
    hashes = {c: c for c in ALL}
    pairs = [(f"MED_LYMPH_{i:03d}", f"ABD_LYMPH_{i:03d}") for i in range(1, 26)]  # 25 duplicates, as in S11
    for a, b in pairs:
        hashes[a] = hashes[b] = f"dup{a}"
    hashes["MED_LYMPH_050"] = hashes["MED_LYMPH_051"] = "dup-within"
    for seed in range(5):
        s = make_splits(
            scheme,
            ALL,
            REGIONS,
            folds=5,
            seed=seed,
            content_hashes=hashes,
            test_fraction=0.2 if scheme == "kfold" else 0.0,
        )
        _check_partition(s.to_json(), ALL)
        for a, b in [*pairs, ("MED_LYMPH_050", "MED_LYMPH_051")]:
            assert s.fold_of(a) == s.fold_of(b)
        assert any("26 group(s) of identical volumes" in w for w in s.warnings)
        sizes = [len(f["val"]) for f in s.folds]
        assert max(sizes) - min(sizes) <= 3


def test_nih_cv_is_per_region() -> None:
    s = make_splits("nih-cv", ALL, REGIONS, folds=3, seed=0)
    data = s.to_json()
    _check_partition(data, ALL)
    per = data["region_folds"]
    assert sorted(len(v) for v in per["mediastinal"]) == [30, 30, 30]
    assert sorted(len(v) for v in per["abdominal"]) == [28, 29, 29]
    with pytest.raises(UsageError):
        make_splits("nih-cv", ALL, REGIONS, folds=3, seed=0, test_fraction=0.1)


def test_single_region_no_warning() -> None:
    hashes = {c: c for c in MED}
    hashes["MED_LYMPH_001"] = hashes["MED_LYMPH_002"] = "x"
    s = kfold(MED, REGIONS, folds=3, seed=0, content_hashes=hashes)
    assert not s.warnings and s.fold_of("MED_LYMPH_001") == s.fold_of("MED_LYMPH_002")


def test_validate_rejects_bad_files(tmp_path: Path) -> None:
    good = kfold(ALL, REGIONS, folds=3, seed=0).to_json()
    bad = json.loads(json.dumps(good))
    bad["folds"][0]["val"].append(bad["folds"][1]["val"][0])
    bad["folds"][0]["val"].sort()
    with pytest.raises(InputError, match="folds"):
        validate(bad)
    missing = json.loads(json.dumps(good))
    missing["folds"][0]["val"] = missing["folds"][0]["val"][1:]
    with pytest.raises(InputError, match="neither in test"):
        validate(missing, ALL)
    p = tmp_path / "splits.json"
    p.write_text(json.dumps(good))
    assert read_splits(p, ALL)["scheme"] == "kfold"


def _cohort(tmp_path: Path, cases: list[str], hashes: dict[str, str] | None = None) -> Path:
    info = DatasetInfo(
        name="t",
        description="",
        cases=cases,
        case_regions={c: REGIONS[c] for c in cases},
        license="CC0",
        citation=[],
        source="test",
        content_hashes=hashes,
    )
    (tmp_path / "dataset.json").write_text(json.dumps(info.to_json()))
    return tmp_path


def test_cli_split(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from lymphcad.cli import main

    hashes = {c: c for c in ALL}
    hashes["MED_LYMPH_001"] = hashes["ABD_LYMPH_001"] = "same"
    root = _cohort(tmp_path, ALL, hashes)
    assert main(["split", str(root), "--folds", "4", "--seed", "3", "--test-fraction", "0.25"]) == 0
    data = read_splits(root / "splits.json", ALL)
    assert data["scheme"] == "kfold" and data["seed"] == 3 and len(data["folds"]) == 4
    assert abs(len(data["test"]) - 0.25 * 176) <= 2
    err = capfd.readouterr().err
    assert "warning:" in err and "identical volumes" in err
    assert main(["split", str(root), "--scheme", "nndet"]) == 0
    data = read_splits(root / "splits.json", ALL)
    assert data["test"] == sorted(MED_TEST + ABD_TEST)
    assert main(["split", str(root), "--scheme", "nih-cv", "--folds", "3", "--seed", "1"]) == 0
    assert read_splits(root / "splits.json", ALL)["scheme"] == "nih-cv"
    assert main(["split", str(root), "--scheme", "bogus"]) == 2
