"""The network's number format at inference: what ``auto`` resolves to, that bfloat16 finds what float32
finds on a real volume with the shipped model, and that the choice reaches the CLI's provenance."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_checks import run_cli
from lymphcad.detector.config import DetectConfig, DetectorConfig, Precision
from lymphcad.detector.infer import detect_volume, normalised_padded, predict_dense
from lymphcad.detector.model import load_model, save_model
from lymphcad.detector.network import build_network
from lymphcad.detector.plan import Plan, prepare_volume
from lymphcad.detector.precision import compute_dtype, concrete_precision, native_bfloat16
from lymphcad.detector.synthetic import sphere_volume, write_sphere_cohort
from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import Geometry
from lymphcad.io.detections import read_provenance

CPU = torch.device("cpu")


def _cpu_probes(monkeypatch: pytest.MonkeyPatch, *, bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_auto_takes_bfloat16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_probes(monkeypatch, bf16=False)
    assert not native_bfloat16(CPU)
    assert compute_dtype(Precision.AUTO, CPU) == torch.float32  # emulated bfloat16 would be slower
    assert concrete_precision(Precision.AUTO, CPU) is Precision.FLOAT32
    _cpu_probes(monkeypatch, bf16=False, amx=True)
    assert compute_dtype(Precision.AUTO, CPU) == torch.bfloat16
    _cpu_probes(monkeypatch, bf16=True)
    assert concrete_precision(Precision.AUTO, CPU) is Precision.BFLOAT16
    # an explicit choice is kept whatever the hardware
    assert compute_dtype(Precision.FLOAT32, CPU) == torch.float32
    _cpu_probes(monkeypatch, bf16=False)
    assert compute_dtype(Precision.BFLOAT16, CPU) == torch.bfloat16
    with pytest.raises(UsageError, match="float16 needs a CUDA device"):
        compute_dtype(Precision.FLOAT16, CPU)


def test_auto_on_gpus_by_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU is needed: the choice reads only the device's compute capability (bfloat16 from Ampere on;
    older GPUs emulate it, so they get float16)."""
    from types import SimpleNamespace

    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    for major, want in ((7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _d, m=major: SimpleNamespace(major=m))
        assert compute_dtype(Precision.AUTO, gpu) == want, major
    assert compute_dtype(Precision.FLOAT16, gpu) == torch.float16
    assert concrete_precision(Precision.FLOAT32, gpu) is Precision.FLOAT32


def test_precision_in_configs_files_and_model_files(tmp_path: Path) -> None:
    assert DetectConfig().precision is Precision.AUTO
    assert DetectConfig(precision="bfloat16").precision is Precision.BFLOAT16  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, float16"):
        DetectConfig(precision="bf16")  # type: ignore[arg-type]
    cfg = DetectorConfig().updated({"detect": {"precision": "float32"}})
    assert cfg.detect.precision is Precision.FLOAT32
    assert (
        cfg.to_dict()["detect"]["precision"] == "float32"
        and type(cfg.to_dict()["detect"]["precision"]) is str
    )
    with pytest.raises(InputError, match="detect.precision must be one of"):
        DetectorConfig().updated({"detect": {"precision": "half"}})
    # model.pt is read with weights_only=True: the setting must be stored as a plain string, and read back
    save_model(
        tmp_path / "m", build_network(), Plan(), name="m", detect=DetectConfig(precision=Precision.FLOAT32)
    )
    assert load_model(tmp_path / "m").detect.precision is Precision.FLOAT32


def test_bfloat16_finds_what_float32_finds_with_the_shipped_model() -> None:
    """The shipped default on a noisy volume with two nodes: the same detections in both formats, scores
    within 0.02 and diameters within 5 % (bfloat16 keeps 8 bits of mantissa; the blend is float32)."""
    geom = Geometry((64, 96, 96), (2.0, 1.2, 1.2), (0.0, 0.0, 0.0))
    centres = geom.zyx_to_world(np.array([[30.0, 40.0, 34.0], [34.0, 60.0, 64.0]]))
    vol, _ = sphere_volume(geom, centres, [16.0, 12.0], seed=11, noise_hu=15.0)
    model = load_model(None)
    base = replace(model.detect, tta_flips=False)
    d32 = detect_volume(vol, model, replace(base, precision=Precision.FLOAT32), case_id="c")
    d16 = detect_volume(vol, model, replace(base, precision=Precision.BFLOAT16), case_id="c")
    strong = [d for d in d32 if d.probability >= 0.3]
    assert len(strong) >= 2, f"the shipped model found {len(strong)} of the 2 nodes in float32"
    for d in strong:
        match = min(d16, key=lambda e: float(np.linalg.norm(np.subtract(e.center_xyz, d.center_xyz))))
        assert np.linalg.norm(np.subtract(match.center_xyz, d.center_xyz)) < 1.0
        assert match.probability == pytest.approx(d.probability, abs=0.02)
        assert match.diameter_mm == pytest.approx(d.diameter_mm, rel=0.05)
    # and the dense maps the peaks come from agree everywhere, not only at the peaks
    prep = prepare_volume(vol, model.plan)
    img = normalised_padded(prep, model.plan)
    kw = {"window_zyx": base.window_zyx, "overlap": base.overlap}
    p32 = predict_dense(model.network, img, precision=Precision.FLOAT32, **kw)  # type: ignore[arg-type]
    p16 = predict_dense(model.network, img, precision=Precision.BFLOAT16, **kw)  # type: ignore[arg-type]
    assert p16.prob.dtype == torch.float32
    assert float((p16.prob - p32.prob).abs().max()) < 0.02


def test_cli_precision_reaches_the_provenance(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cohort = write_sphere_cohort(tmp_path / "c", n_cases=1, shape_zyx=(24, 48, 48))
    out = tmp_path / "d.csv"
    code, _, err = run_cli(
        capsys, "detect", cohort, "--out", out, "--device", "cpu", "--precision", "bfloat16"
    )
    assert code == 0, err
    prov = read_provenance(out)
    assert prov is not None and prov["settings"]["precision"] == "bfloat16"
    auto = tmp_path / "auto.csv"
    code, _, err = run_cli(capsys, "detect", cohort, "--out", auto, "--device", "cpu")
    assert code == 0, err
    resolved = json.loads(Path(str(auto) + ".json").read_text())["settings"]["precision"]
    assert resolved == ("bfloat16" if native_bfloat16(CPU) else "float32")  # never "auto"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(
        capsys, "detect", cohort, "--out", tmp_path / "h.csv", "--device", "cpu", "--precision", "float16"
    )
    assert code != 0 and "float16 needs a CUDA device" in err
    assert len([line for line in err.strip().splitlines() if line.strip()]) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
