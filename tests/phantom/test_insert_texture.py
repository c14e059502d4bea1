"""The third image-formation model, texture (real tissue texture of the same CT), on real backgrounds: the
noise level inside a node matches the level around it, the mean HU is the content's, nothing is written into
forbidden tissue, the source patch is homogeneous soft tissue or fat; ``--formation`` lists; existing
``both`` cases keep their bytes.

Backgrounds are the crops of tests/phantom/test_insert_stations.py (../shared/data/real-ct, never holdout/):
the contrast chest cmb-crc/MSB-01068-chest around the carina and the contrast abdomen crlm-ct/CRLM-CT-1004.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lymphcad.cli import main
from lymphcad.errors import UsageError
from lymphcad.geometry import CTVolume
from lymphcad.io.nifti import write_nifti
from lymphcad.io.reader import read_ct
from lymphcad.phantom.background import FORBIDDEN, Tissue
from lymphcad.phantom.formation import NoiseModel, edge_alpha, highpass, noise_level_ratio, robust_sd
from lymphcad.phantom.insert import (
    BackgroundAnalysis,
    analyse_background,
    canonical_volume,
    insert_nodes,
    parse_formations,
)
from lymphcad.phantom.nodemodel import Content, Formation, node_geometry, render_node, sample_node_spec
from lymphcad.phantom.texture import SourceKind, TextureSource, node_texture, write_texture_node

#: classes a texture source may lie in (by kind)
SOURCE_CLASSES = {
    SourceKind.SOFT: {int(Tissue.SOFT)},
    SourceKind.FAT: {int(Tissue.FAT_VISC), int(Tissue.FAT_SUBCUT)},
}


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize(("where", "seeds", "n"), [("chest", (11,), 8), ("abdomen", (3, 4), 5)])
def test_texture_keeps_noise_and_stays_out_of_forbidden_tissue(
    where: str, seeds: tuple[int, ...], n: int, request: pytest.FixtureRequest
) -> None:
    """Pooled over nodes, the high-pass noise SD in node cores is within 10 % of homogeneous fat / soft tissue
    around them before insertion (the blend model's check: the texture is new, its level must match); nodes
    lie in hosting tissue only, nothing changes beyond the edge blur's reach, and every texture source is a box
    wholly inside homogeneous soft tissue or fat of the background."""
    vol, an = request.getfixturevalue(where)
    source = TextureSource.build(vol.array, an.tissue)
    inside: list[np.ndarray] = []
    ref: list[np.ndarray] = []
    kinds: set[SourceKind] = set()
    for seed in seeds:
        res = insert_nodes(  # the fat pass only (redraw placement): the image stays comparable voxel by voxel
            vol,
            n,
            np.random.default_rng(seed),
            formations=(Formation.TEXTURE,),
            analysis=an,
            p_positive=1.0,
            keep_size=False,
        )
        assert len(res.nodes) >= 3 and all(x.spec.formation is Formation.TEXTURE for x in res.nodes)
        nodes = res.all_nodes > 0
        assert not np.isin(an.tissue[nodes], FORBIDDEN).any(), (
            "a node overlaps lumen, bone, lung, airway or organ"
        )
        assert all(
            x.placement == "fat" for x in res.nodes
        )  # no push moved the anatomy: the image is comparable
        reach = round(8.0 / vol.geometry.spacing_zyx[2])
        near = ndimage.binary_dilation(nodes, structure=np.ones((3, 3, 3), bool), iterations=reach)
        assert np.array_equal(res.image[~near], vol.array[~near]), "texture written beyond the node's edge"
        for x in res.nodes:
            src = x.texture_source
            assert src is not None and src.kind is not SourceKind.SYNTHETIC and src.box is not None
            kinds.add(src.kind)
            assert source.mask(src.kind)[src.box].all(), "source box leaves homogeneous tissue"
            assert set(np.unique(an.tissue[src.box]).tolist()) <= SOURCE_CLASSES[src.kind]
            c = noise_level_ratio(vol.array, res.image, an.tissue, res.all_nodes == x.id)
            inside.append(c.inside_values)
            ref.append(c.around_values)
    pooled_in = np.concatenate(inside)
    assert pooled_in.size > 1000
    ratio = robust_sd(pooled_in) / robust_sd(np.concatenate(ref))
    assert 0.9 <= ratio <= 1.1, ratio
    if where == "abdomen":  # thick muscle / parenchyma there: real soft-tissue texture, not the fat fallback
        assert kinds == {SourceKind.SOFT}


@pytest.mark.real
@pytest.mark.slow
def test_texture_node_mean_is_the_content_and_noise_is_real(
    abdomen: tuple[CTVolume, BackgroundAnalysis],
) -> None:
    """A solid 16 mm node of 45 HU written by the texture model in para-aortic fat: where it is fully opaque its
    mean is 45 HU (± 3) and its noise level is the surrounding fat's (± 10 %); its texture is the real patch's,
    not synthetic noise; the same seed gives the same node."""
    vol, an = abdomen
    sp = vol.geometry.spacing_zyx
    spec = sample_node_spec(np.random.default_rng(5), "abdominal", (Formation.TEXTURE,), sad_mm=16.0)
    spec = replace(spec, content=Content.SOLID, hu=45.0, texture_sd=0.0, lobulation=0.0, irregularity=0.0)
    deep = np.argwhere((an.tissue == Tissue.FAT_VISC) & (an.depth_mm >= 9.0))
    k, j, i = (int(v) for v in deep[len(deep) // 2])
    geo = node_geometry(spec, np.array([k * sp[0], j * sp[1], i * sp[2]]), np.eye(3))
    rendered = render_node(spec, geo, vol.array.shape, sp)
    assert rendered is not None
    box = rendered.box
    bg = vol.array[box].astype(np.float32)
    sigma = np.full(bg.shape[0], 14.0, np.float32)
    source = TextureSource.build(vol.array, an.tissue)
    out, patch = write_texture_node(
        bg, rendered.coverage, rendered.content, spec.edge_mm, sp, sigma, source, box[0].start, 7, an.noise
    )
    assert patch.kind is SourceKind.SOFT and patch.box is not None
    a = edge_alpha(rendered.coverage, spec.edge_mm, sp)
    full = a >= 0.99
    assert full.sum() > 300
    assert abs(float(out[full].mean()) - 45.0) <= 3.0
    # noise SD where opaque: the requested 14 HU (as measured by the high-pass, converted by the spectrum's gain)
    core = ndimage.binary_erosion(full, structure=np.ones((1, 3, 3), bool))
    level = robust_sd(highpass(out)[core]) / an.noise.hp_gain
    assert 0.9 <= level / 14.0 <= 1.1, level
    # the texture is the source's residual (up to a per-slice scale and flips): strongly correlated with it
    sup = ndimage.find_objects((a > 1e-3).astype(np.int8))[0]
    assert sup is not None
    opaque = ndimage.binary_erosion(full[sup], structure=np.ones((1, 3, 3), bool))
    src_hp = highpass(source.hu[patch.box])
    out_hp = highpass(out)[sup]
    best = max(
        float(np.corrcoef(src_hp[opaque], f[opaque])[0, 1])
        for f in (out_hp, out_hp[:, ::-1], out_hp[:, :, ::-1], out_hp[:, ::-1, ::-1])
    )
    assert best > 0.8, best
    again, _ = write_texture_node(
        bg, rendered.coverage, rendered.content, spec.edge_mm, sp, sigma, source, box[0].start, 7, an.noise
    )
    assert np.array_equal(out, again)


def test_no_homogeneous_box_falls_back_to_synthetic_noise_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A background without homogeneous soft tissue or fat: the node gets the blend model's synthetic noise of
    the requested level and one log line says why."""
    rng = np.random.default_rng(0)
    hu = rng.normal(0.0, 10.0, (6, 48, 48)).astype(np.float32)
    tissue = np.full(hu.shape, Tissue.VESSEL, np.uint8)
    source = TextureSource.build(hu, tissue)
    sp = (2.0, 0.8, 0.8)
    model = NoiseModel.measure(hu, np.full(hu.shape, Tissue.SOFT, np.uint8), sp)
    cov = np.zeros(hu.shape, np.float32)
    cov[1:5, 12:36, 12:36] = 1.0
    alpha = edge_alpha(cov, 0.8, sp)
    sigma = np.full(6, 12.0, np.float32)
    with caplog.at_level(logging.WARNING, logger="lymphcad.phantom.texture"):
        t, patch = node_texture(source, alpha, sigma, sp, 0, np.random.default_rng(1), model)
    assert patch.kind is SourceKind.SYNTHETIC and patch.box is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "synthetic noise" in lines[0] and "\n" not in lines[0]
    assert 0.9 <= float(t[1:5, 14:34, 14:34].std()) / 12.0 <= 1.1


def test_parse_formations() -> None:
    """Single models, ``both`` (additive + blend, as before), ``all``, comma-separated lists in the enum's
    order; anything else is a one-line usage error naming the option."""
    A, B, T = Formation.ADDITIVE, Formation.BLEND, Formation.TEXTURE
    assert parse_formations("both") == (A, B)
    assert parse_formations("blend,additive") == (A, B)
    assert parse_formations("additive,texture") == (A, T)
    assert parse_formations("texture") == (T,)
    assert parse_formations("all") == (A, B, T)
    for bad in ("nonsense", "", "additive,", "additive,nonsense", "Texture"):
        with pytest.raises(UsageError, match="--formation") as e:
            parse_formations(bad)
        assert "\n" not in str(e.value)


#: SHA-256 of the image ``insert_nodes`` made for ``--formation both`` on the abdomen crop (4 nodes, seed 7),
#: computed with main's code before the texture model existed (commit e32836c), and its nodes
BOTH_SHA256 = "170f5eb404ed9b827a24aba56d088c2daf5aa92c3a84272afbc7d9d549972942"
BOTH_NODES = [
    ("additive", "paracaval", 7.3),
    ("additive", "paracaval", 8.05),
    ("additive", "para_aortic", 7.19),
    ("blend", "mesenteric", 11.54),
]


@pytest.mark.real
@pytest.mark.slow
def test_both_is_unchanged_by_the_texture_model(abdomen: tuple[CTVolume, BackgroundAnalysis]) -> None:
    """``both`` draws exactly as before texture existed (same random stream, same bytes), with the placement
    of those days (``keep_size=False``: how the training data of the models up to v8 were drawn)."""
    vol, an = abdomen
    res = insert_nodes(
        vol,
        4,
        np.random.default_rng(7),
        region="abdominal",
        formations=parse_formations("both"),
        analysis=an,
        keep_size=False,
    )
    assert [(x.spec.formation.value, x.station, round(x.sad_mm, 2)) for x in res.nodes] == BOTH_NODES
    assert all(x.texture_source is None for x in res.nodes)
    assert hashlib.sha256(res.image.tobytes()).hexdigest() == BOTH_SHA256


@pytest.mark.real
@pytest.mark.slow
def test_cli_formation_list_and_bad_value(
    abdomen: tuple[CTVolume, BackgroundAnalysis], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--formation additive,texture`` draws both per node and records each node's model (node table, case
    json); ``--formation nonsense`` exits 2 with one line naming the option."""
    vol, _ = abdomen
    bg = tmp_path / "abdomen_crop.nii.gz"
    write_nifti(bg, vol.array, vol.geometry)
    args = ["insert", "--background", str(bg), "--cases", "1", "--nodes", "5", "5", "--seed", "2"]
    assert main([*args, "--out", str(tmp_path / "a"), "--formation", "additive,texture"]) == 0
    extra = tmp_path / "a" / "extra"
    rows = [r for f in sorted(extra.glob("*_nodes.csv")) for r in csv.DictReader(f.open(encoding="utf-8"))]
    assert len(rows) == 5
    assert {r["formation"] for r in rows} == {"additive", "texture"}
    meta = json.loads(next(extra.glob("*_insert.json")).read_text(encoding="utf-8"))
    assert meta["formations"] == ["additive", "texture"] and meta["run"]["formation"] == "additive,texture"
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b"), "--formation", "nonsense"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--formation" in err[0] and "nonsense" in err[0], err
    assert not (tmp_path / "b" / "dataset.json").exists()


@pytest.mark.real
@pytest.mark.slow
def test_texture_after_mass_effect_in_a_fat_poor_chest(real_ct_dir: Path) -> None:
    """The fat-poor unenhanced chest of ACRIN-FLT-Breast 013, where nodes are placed by pushing neighbours aside:
    texture nodes never overlap forbidden tissue of the pushed tissue map, their texture comes from homogeneous
    soft tissue or fat of the unpushed background, and their noise level is the blend model's on the same nodes
    (± 0.1; the background's level around these nodes is itself uneven, docs/phantom.md)."""
    vol = canonical_volume(read_ct(real_ct_dir / "acrin-flt-breast" / "013-chest"))
    an = analyse_background(vol)
    source = TextureSource.build(vol.array, an.tissue)
    ratios = {}
    for f in (Formation.TEXTURE, Formation.BLEND):
        res = insert_nodes(vol, 4, np.random.default_rng(0), formations=(f,), analysis=an, p_positive=1.0)
        assert len(res.nodes) == 4 and res.tissue is not None
        assert sum(x.placement == "mass_effect" for x in res.nodes) >= 3
        assert not np.isin(res.tissue[res.all_nodes > 0], FORBIDDEN).any()
        if f is Formation.TEXTURE:
            for x in res.nodes:
                src = x.texture_source
                assert src is not None and src.box is not None and src.kind is not SourceKind.SYNTHETIC
                assert source.mask(src.kind)[src.box].all()
        checks = [
            noise_level_ratio(vol.array, res.image, an.tissue, res.all_nodes == x.id) for x in res.nodes
        ]
        ratios[f] = robust_sd(np.concatenate([c.inside_values for c in checks])) / robust_sd(
            np.concatenate([c.around_values for c in checks])
        )
    assert abs(ratios[Formation.TEXTURE] - ratios[Formation.BLEND]) <= 0.1, ratios
