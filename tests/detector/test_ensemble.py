"""Model ensembles: the averaged outputs, the stored format (version 2), and detection through one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lymphcad.detector.config import NetworkConfig
from lymphcad.detector.infer import detect_volume
from lymphcad.detector.model import (
    DEFAULT_MODEL,
    ENSEMBLE_VERSION,
    ensemble_of,
    load_model,
    network_from_payload,
    read_payload,
    save_model,
)
from lymphcad.detector.network import EnsembleNet, build_network
from lymphcad.detector.plan import Plan
from lymphcad.detector.synthetic import sphere_volume
from lymphcad.errors import InputError
from lymphcad.geometry import Geometry

#: a shipped single-network model (the default is an ensemble of it and another network)
ONE = "centernet3d_realmix_v8"
SMALL = NetworkConfig(base_channels=8, blocks=(1, 1, 1), seg_head=True)


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network(SMALL)
    with torch.no_grad():  # move the heads off their near-constant start so members really differ
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_ensemble_averages_probabilities_and_regressions() -> None:
    a, b = _net(1), _net(2)
    ens = EnsembleNet([a, b]).eval()  # type: ignore[list-item]
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        oa, ob, oe = a(x), b(x), ens(x)
    for key in ("heatmap", "seg"):
        want = (torch.sigmoid(oa[key]) + torch.sigmoid(ob[key])) / 2
        assert torch.allclose(torch.sigmoid(oe[key]), want, atol=1e-6)
        assert not torch.allclose(oe[key], oa[key], atol=1e-3)  # the members differ: a real average
    for key in ("size", "offset"):
        assert torch.allclose(oe[key], (oa[key] + ob[key]) / 2, atol=1e-6)


def test_ensemble_needs_two_members_of_one_architecture() -> None:
    with pytest.raises(ValueError, match="at least two"):
        EnsembleNet([_net(1)])  # type: ignore[list-item]
    other = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1), seg_head=False))
    with pytest.raises(ValueError, match="one architecture"):
        EnsembleNet([_net(1), other])  # type: ignore[list-item]


def test_ensemble_file_round_trip_and_refusals(tmp_path: Path) -> None:
    from lymphcad.detector.config import DetectConfig

    ens = EnsembleNet([_net(1), _net(2)]).eval()  # type: ignore[list-item]
    path = save_model(tmp_path / "ens", ens, Plan(), name="ens", detect=DetectConfig(), half=True)
    data = read_payload(path)
    assert data["version"] == ENSEMBLE_VERSION and len(data["members"]) == 2 and "state_dict" not in data
    loaded = load_model(tmp_path / "ens")
    assert isinstance(loaded.network, EnsembleNet)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        want, got = ens(x)["heatmap"], loaded.network(x)["heatmap"]
    assert torch.allclose(torch.sigmoid(got), torch.sigmoid(want), atol=2e-3)  # float16 storage
    # training never starts from an ensemble, and a damaged member list is named
    with pytest.raises(InputError, match="ensemble"):
        network_from_payload(data, where=path)
    data["members"] = data["members"][:1]
    torch.save(data, tmp_path / "one.pt")
    with pytest.raises(InputError, match="at least two") as err:
        read_payload(tmp_path / "one.pt")
    assert "one.pt" in str(err.value)


def test_ensemble_of_refuses_another_input_grid(tmp_path: Path) -> None:
    from lymphcad.detector.config import DetectConfig

    save_model(tmp_path / "a", _net(1), Plan(), name="a", detect=DetectConfig())  # type: ignore[arg-type]
    save_model(tmp_path / "b", _net(2), Plan(spacing_mm=1.5), name="b", detect=DetectConfig())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="plan grid"):
        ensemble_of([tmp_path / "a", tmp_path / "b"], tmp_path / "ab", name="ab")


def test_ensemble_of_a_model_with_itself_detects_what_it_detects(tmp_path: Path) -> None:
    """Two copies of a shipped network average to that network: the same node, position and score."""
    geom = Geometry((56, 72, 72), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    centre = geom.zyx_to_world(np.array([28.0, 36.0, 36.0]))
    vol, _ = sphere_volume(geom, [centre], [14.0], seed=5, noise_hu=8.0)
    single = load_model(ONE)
    pair = load_model(ensemble_of([ONE, ONE], tmp_path / "pair", name="pair"))
    assert isinstance(pair.network, EnsembleNet) and pair.enlarged_mm == single.enlarged_mm
    d1, d2 = detect_volume(vol, single, case_id="c"), detect_volume(vol, pair, case_id="c")
    assert d1, f"{ONE} found no node in the sphere volume"
    assert np.linalg.norm(np.asarray(d1[0].center_xyz) - centre) < 4.0
    assert len(d1) == len(d2)
    for a, b in zip(d1, d2, strict=True):
        assert np.allclose(a.center_xyz, b.center_xyz, atol=1e-3)
        assert a.probability == pytest.approx(b.probability, abs=1e-4)


def test_recipe_writes_an_ensemble_run_the_card_can_follow(tmp_path: Path) -> None:
    """train_real_model.py --ensemble: one model file of every member and members.json naming where each came from."""
    import json

    from lymphcad.detector.config import DetectConfig
    from script_loader import load_script

    release = Path(__file__).resolve().parents[2] / "release"
    recipe = load_script(release / "train_real_model.py", "train_real_model")
    card = load_script(release / "real_model_card.py", "real_model_card")
    save_model(
        tmp_path / "run_a" / "snapshots" / "epoch_0010", _net(1), Plan(), name="a", detect=DetectConfig()
    )  # type: ignore[arg-type]
    save_model(tmp_path / "run_b" / "model", _net(2), Plan(), name="b", detect=DetectConfig())  # type: ignore[arg-type]
    recipe.make_ensemble(tmp_path, tmp_path / "ens", "run_a:10,run_b")
    assert isinstance(load_model(DEFAULT_MODEL).network, EnsembleNet)  # the shipped default is one too
    loaded = load_model(tmp_path / "ens")
    assert isinstance(loaded.network, EnsembleNet) and len(loaded.network.members) == 2
    members = json.loads((tmp_path / "ens" / "members.json").read_text())["members"]
    assert [(m["run"], m["snapshot"]) for m in members] == [("run_a", 10), ("run_b", None)]
    assert card._members(tmp_path / "ens") == [(tmp_path / "run_a", 10), (tmp_path / "run_b", None)]
    assert card._members(tmp_path / "run_a") == []
    with pytest.raises(SystemExit, match="already holds a model"):  # never overwritten
        recipe.make_ensemble(tmp_path, tmp_path / "ens", "run_a:10,run_b")
    with pytest.raises(SystemExit, match="no model.pt"):
        recipe.make_ensemble(tmp_path, tmp_path / "ens2", "run_a:20,run_b")
    with pytest.raises(SystemExit, match="at least two"):
        recipe.make_ensemble(tmp_path, tmp_path / "ens3", "run_b")
