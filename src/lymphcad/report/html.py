"""One self-contained HTML report of a run: FROC and published results, per-case crops, model card, terms.

Everything is inside the file (images as ``data:`` PNGs, inline CSS, no script) and a Content-Security-Policy
forbids any request, so the report can be mailed or archived and opens the same anywhere. Crops follow the
radiological convention (formats.md §1) through :mod:`lymphcad.report.planes`. Published numbers are shown
in their own table, labelled as results on the real CT Lymph Nodes data, never mixed with this run's.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from lymphcad import __version__, atomic
from lymphcad.citations import TCIA_DATA_USAGE_POLICY
from lymphcad.cohort import Cohort, open_cohort
from lymphcad.errors import InputError
from lymphcad.evaluate.literature import OPERATING_POINTS, PUBLISHED_AP, PUBLISHED_LABEL, SOURCE_DOC
from lymphcad.evaluate.matching import Outcome
from lymphcad.evaluate.run import EvalResult, StratumResult, evaluate_cohort
from lymphcad.evaluate.settings import DuplicatePolicy, EvalSettings, MatchRule
from lymphcad.evaluate.table import metric_rows
from lymphcad.geometry import Geometry, reorient_to_lps
from lymphcad.hashing import file_sha256
from lymphcad.io.detections import DetectionTable, read_detections, read_provenance
from lymphcad.report.froc_plot import plot_froc
from lymphcad.report.planes import WINDOWS, Plane, display_rc, plane_image, window_u8

#: field of view of a crop (mm) and its size on the page (px)
CROP_MM: Final = 60.0
CROP_PX: Final = 168
_CSP: Final = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
_COLOURS: Final = {
    "tp": (0, 230, 118),
    "fp": (255, 145, 0),
    "missed": (255, 64, 129),
    "pending": (255, 213, 79),
}


_KIND_NAMES: Final = (
    ("tp", "hit(s)"),
    ("fp", "false positive(s)"),
    ("missed", "missed node(s)"),
    ("pending", "without ground truth"),
)


@dataclass(frozen=True)
class Panel:
    """One finding shown in a case: its kind, caption and world centre."""

    kind: str  # tp | fp | missed | pending (no ground truth)
    caption: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float | None


def settings_from_eval(path: Path) -> tuple[EvalSettings, dict[str, Any]]:
    """The matching settings recorded in an eval.json (formats.md §4) and the file's content."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rule = data["rule"]
        radius = rule["radius_mm"]
        settings = EvalSettings(
            match=MatchRule(rule["match"]),
            radius_mm=None if radius == "auto" else float(radius),
            duplicates=DuplicatePolicy(rule["duplicates"]),
            nndet_boxes=rule.get("box_convention") == "nndetection-padded-voxel",
            bootstrap=int(rule.get("bootstrap_resamples", 1000)),
            seed=int(rule.get("bootstrap_seed", 0)),
        )
    except OSError as exc:
        raise InputError(f"cannot read eval.json ({exc.strerror})", path) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"not an eval.json of formats.md §4 ({exc.__class__.__name__}: {exc})", path
        ) from exc
    return settings, data


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def crop_image(
    array: NDArray[Any],
    geom: Geometry,
    plane: Plane,
    center_xyz: tuple[float, float, float],
    *,
    window: tuple[float, float],
    ring_mm: float | None,
    colour: tuple[int, int, int],
    dashed: bool = False,
) -> Image.Image:
    """A square crop (``CROP_MM`` wide) of an LPS-ordered volume through a point, with a ring around it."""
    zyx = geom.world_to_zyx(np.asarray(center_xyz, dtype=np.float64))
    index = int(np.clip(np.floor(zyx[plane.axis] + 0.5), 0, array.shape[plane.axis] - 1))
    image, (row_mm, col_mm) = plane_image(array, geom.spacing_zyx, plane, index)
    r0, c0 = display_rc(zyx, geom.shape_zyx, plane)
    half_r, half_c = CROP_MM / 2 / row_mm, CROP_MM / 2 / col_mm
    rows = np.arange(math.floor(r0 - half_r), math.ceil(r0 + half_r) + 1)
    cols = np.arange(math.floor(c0 - half_c), math.ceil(c0 + half_c) + 1)
    inside_r = (rows >= 0) & (rows < image.shape[0])
    inside_c = (cols >= 0) & (cols < image.shape[1])
    patch = np.full((rows.size, cols.size), -1024, dtype=np.float32)
    patch[np.ix_(inside_r, inside_c)] = image[np.ix_(rows[inside_r], cols[inside_c])]
    pil = Image.fromarray(window_u8(patch, window[0], window[1]), mode="L").convert("RGB")
    # resample so that one page pixel is the same number of mm both ways
    scale = CROP_PX / CROP_MM
    pil = pil.resize(
        (max(1, round(cols.size * col_mm * scale)), max(1, round(rows.size * row_mm * scale))),
        Image.Resampling.BILINEAR,
    )
    cx = (c0 - cols[0] + 0.5) * col_mm * scale
    cy = (r0 - rows[0] + 0.5) * row_mm * scale
    left, top = round(cx - CROP_PX / 2), round(cy - CROP_PX / 2)
    pil = pil.crop((left, top, left + CROP_PX, top + CROP_PX))
    draw = ImageDraw.Draw(pil)
    radius = max(4.0, (ring_mm if ring_mm else 10.0) / 2 * scale)
    c = CROP_PX / 2
    if dashed:
        for start in range(0, 360, 30):
            draw.arc(
                (c - radius, c - radius, c + radius, c + radius), start, start + 15, fill=colour, width=2
            )
    else:
        draw.ellipse((c - radius, c - radius, c + radius, c + radius), outline=colour, width=2)
    left_l, right_l, top_l, bottom_l = plane.letters
    for text, xy in (
        (left_l, (3, c - 6)),
        (right_l, (CROP_PX - 10, c - 6)),
        (top_l, (c - 3, 2)),
        (bottom_l, (c - 3, CROP_PX - 13)),
    ):
        draw.text(xy, text, fill=(230, 230, 235))
    return pil


def case_panels(
    result: EvalResult | None, table: DetectionTable, case_id: str, cohort: Cohort, threshold: float
) -> list[Panel]:
    """Detections at or above ``threshold`` (TP/FP when there is ground truth) and the nodes they miss."""
    rows = np.flatnonzero((table.case_ids == case_id) & (table.probabilities >= threshold))
    rows = rows[np.argsort(-table.probabilities[rows], kind="stable")]
    outcome: dict[int, tuple[str, str]] = {}
    missed: list[Panel] = []
    if result is not None:
        idx = [t.case_id for t in result.matched.truths].index(case_id)
        truth, det_rows, match = (
            result.matched.truths[idx],
            result.matched.rows[idx],
            result.matched.matches[idx],
        )
        for local, r in enumerate(det_rows.tolist()):
            code = Outcome(int(match.outcome[local]))
            ni = int(match.node_index[local])
            node = f", node {int(truth.node_ids[ni])}" if ni >= 0 else ""
            if code is Outcome.TP:
                outcome[int(r)] = ("tp", f" — hit{node}")
            elif code is Outcome.DUPLICATE:
                outcome[int(r)] = ("tp", f" — duplicate hit{node}")
            elif code is Outcome.FP:
                outcome[int(r)] = ("fp", " — false positive")
            else:
                outcome[int(r)] = ("pending", f" — {code.word.replace('_', ' ')}")
        for n in range(truth.node_ids.size):
            if match.node_best[n] < threshold:
                short, long_ = float(truth.node_short_mm[n]), float(truth.node_long_mm[n])
                size = short if math.isfinite(short) else (long_ if math.isfinite(long_) else None)
                c = truth.node_centers_xyz[n]
                missed.append(
                    Panel(
                        "missed",
                        f"missed node {int(truth.node_ids[n])}" + (f", SAD {size:.1f} mm" if size else ""),
                        (float(c[0]), float(c[1]), float(c[2])),
                        size,
                    )
                )
    panels = []
    for rank, r in enumerate(rows.tolist(), start=1):
        d = float(table.diameters_mm[r])
        word, note = outcome.get(r, ("pending", ""))
        c = table.centers_xyz[r]
        panels.append(
            Panel(
                word,
                f"#{rank} p {table.probabilities[r]:.2f}"
                + (f", Ø {d:.1f} mm" if math.isfinite(d) else "")
                + note,
                (float(c[0]), float(c[1]), float(c[2])),
                d if math.isfinite(d) else None,
            )
        )
    return panels + missed


def _metrics_table(result: EvalResult) -> str:
    blocks: list[tuple[str, StratumResult]] = [("pooled", result.pooled), *result.regions.items()]
    blocks = [(n, b) for n, b in blocks if n == "pooled" or b.n_nodes > 0]
    head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in blocks)
    lines = [f"<tr><th></th>{head}</tr>"]

    for label, cells in metric_rows(blocks):
        lines.append(
            f"<tr><th>{html.escape(label)}</th>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    return "<table class='num'>" + "".join(lines) + "</table>"


def _published_table() -> str:
    lines = [
        "<tr><th>method</th><th>region</th><th>metric</th><th>value</th><th>protocol</th><th>reference</th></tr>"
    ]
    for p in OPERATING_POINTS:
        lines.append(
            f"<tr><td>{html.escape(p.method)}</td><td>{html.escape(p.region)}</td><td>sensitivity @ {p.fp_per_volume:g} FP/vol</td>"
            f"<td>{p.sensitivity:.3f}</td><td>{html.escape(p.protocol)}</td><td>{html.escape(p.reference)}</td></tr>"
        )
    for a in PUBLISHED_AP:
        lines.append(
            f"<tr><td>{html.escape(a.method)}</td><td>{html.escape(a.region)}</td><td>AP @ IoU {a.iou:g}</td>"
            f"<td>{a.ap:.3f}</td><td>{html.escape(a.protocol)}</td><td>{html.escape(a.reference)}</td></tr>"
        )
    return "<table class='num pub'>" + "".join(lines) + "</table>"


def _model_card(provenance: dict[str, Any] | None) -> str:
    """The model card text of the model that made the detections (shipped or beside its model.pt)."""
    if provenance is None:
        return "No provenance file (dets.csv.json) beside the detections: the model is unknown."
    model = provenance.get("model") or {}
    settings = provenance.get("settings") or {}
    candidates = []
    if isinstance(settings.get("model_path"), str):
        candidates.append(Path(settings["model_path"]).parent / "model_card.md")
    name = model.get("name")
    if isinstance(name, str) and name and "/" not in name:
        candidates.append(Path(str(resources.files("lymphcad.models").joinpath(name, "model_card.md"))))
    for cand in candidates:
        if cand.is_file():
            return cand.read_text(encoding="utf-8")
    return f"Model {name or 'unknown'} (sha256 {model.get('sha256') or 'unknown'}): no model card found."


_STYLE: Final = """
body{margin:0;background:#f6f6f4;color:#1d1d1f;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:14px;margin:18px 0 6px}.dim{color:#666}
.banner{padding:8px 12px;border-radius:5px;margin:10px 0;border:1px solid}
.synthetic{background:#fff8e1;border-color:#f0c040}.real{background:#e8f5e9;border-color:#81c784}
table.num{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0}
table.num th,table.num td{border:1px solid #ddd;padding:3px 8px;text-align:right}table.num th{background:#eee}
table.pub td:nth-child(-n+2),table.pub td:nth-child(n+5){text-align:left}
.froc{max-width:100%;border:1px solid #ddd;background:#fff}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#111;color:#eee;border-radius:5px;padding:6px;font-size:12px}
.card img{display:block;width:168px;height:168px;image-rendering:auto}.card .pair{display:flex;gap:4px}
.k-tp{border-top:3px solid #00e676}.k-fp{border-top:3px solid #ff9100}.k-missed{border-top:3px solid #ff4081}.k-pending{border-top:3px solid #ffd54f}
pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:10px;font-size:12.5px}
footer{margin-top:30px;font-size:12px;color:#555}
"""


def build_report(
    cohort_dir: str | Path,
    dets_path: str | Path,
    out: str | Path,
    *,
    eval_path: str | Path | None = None,
    threshold: float = 0.5,
    on_case: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of detections on a cohort to ``out`` (atomically) and return its path."""
    cohort = open_cohort(cohort_dir)
    dets_path = Path(dets_path)
    table = read_detections(dets_path, known_cases=cohort.info.cases)
    provenance = read_provenance(dets_path)
    eval_data: dict[str, Any] | None = None
    settings = EvalSettings()
    if eval_path is not None:
        settings, eval_data = settings_from_eval(Path(eval_path))
    result = evaluate_cohort(cohort, table, settings) if cohort.annotations else None
    if result is not None and eval_data is not None:
        recorded = (eval_data.get("pooled") or {}).get("cpm")
        if recorded is not None and abs(float(recorded) - result.pooled.cpm) > 1e-6:
            raise InputError(
                f"its pooled CPM {recorded} differs from these detections' {result.pooled.cpm:.6f}: "
                "it was computed on other detections or another cohort",
                eval_path,
            )
    info = cohort.info
    synthetic = "tcia" not in info.source.lower()
    parts: list[str] = []
    esc = html.escape
    parts.append(f"<h1>lymphcad report — {esc(info.name)}</h1>")
    model = (provenance or {}).get("model") or {}
    parts.append(
        f"<p class='dim'>Detections: {esc(dets_path.name)} (sha256 {file_sha256(dets_path)[:16]}…), "
        f"model {esc(str(model.get('name') or 'unknown'))}; {len(table)} detections in {len(cohort.cases)} cases; "
        f"threshold for the case panels {threshold:g}. lymphcad {esc(__version__)}, "
        f"{_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>"
    )
    data_note = f"This run's data: <b>{esc(info.source)}</b>. " + (
        "These are synthetic images: numbers from the phantom say how the software behaves, not how it "
        "would perform on patients, and are not comparable with the published results below."
        if synthetic
        else "Real CT from TCIA."
    )
    parts.append(f"<div class='banner {'synthetic' if synthetic else 'real'}'>{data_note}</div>")
    parts.append("<h2>Detection performance — this run</h2>")
    if result is None:
        parts.append("<p>The cohort has no ground truth (annotations.csv): no FROC.</p>")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_froc(result, Path(tmp) / "froc.png")
            uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<img class='froc' alt='FROC curve of this run' src='{uri}'>")
        rule = result.settings
        parts.append(
            f"<p class='dim'>Matching: {esc(rule.match.value)}, radius "
            f"{'auto' if rule.radius_mm is None else f'{rule.radius_mm:g} mm'}, duplicates {esc(rule.duplicates.value)}"
            + (f" (from {esc(Path(eval_path).name)})" if eval_path is not None else "")
            + ". Sensitivity at k FP/volume by numpy.interp on the pooled curve; CPM = mean at 1/8…8.</p>"
        )
        parts.append(_metrics_table(result))
    parts.append(f"<h2>For comparison — {esc(PUBLISHED_LABEL)} (not this run)</h2>")
    parts.append(
        f"<p class='dim'>Published on the real TCIA CT Lymph Nodes collection, with their own protocols "
        f"({esc(SOURCE_DOC)}).</p>"
    )
    parts.append(_published_table())
    parts.append(
        "<h2>Cases</h2><p class='dim'>Axial and coronal crops "
        f"({CROP_MM:g} mm, radiological convention: patient right on the image's left) around every detection "
        f"at or above {threshold:g} and every ground-truth node none of them hits. Colours: "
        "<b style='color:#00a152'>hit</b>, <b style='color:#e65100'>false positive</b>, "
        "<b style='color:#d81b60'>missed node</b>, <b style='color:#b28900'>no ground truth</b>.</p>"
    )
    for case_id in cohort.cases:
        panels = case_panels(result, table, case_id, cohort, threshold)
        region = cohort.region_of(case_id)
        counts = ", ".join(
            f"{n} {name}" for kind, name in _KIND_NAMES if (n := sum(p.kind == kind for p in panels))
        )
        parts.append(
            f"<h3>{esc(case_id)} <span class='dim'>({esc(region)}; {counts or 'nothing at this threshold'})</span></h3>"
        )
        if panels:
            vol = cohort.read_image(case_id)
            array, geom = reorient_to_lps(vol.array, vol.geometry)
            window = WINDOWS["abdomen" if region == "abdominal" else "mediastinum"]
            cards = []
            for p in panels:
                colour = _COLOURS[p.kind]
                imgs = "".join(
                    f"<img alt='{plane.value} crop' src='"
                    + _png_uri(
                        crop_image(
                            array,
                            geom,
                            plane,
                            p.center_xyz,
                            window=window,
                            ring_mm=p.diameter_mm,
                            colour=colour,
                            dashed=p.kind == "missed",
                        )
                    )
                    + "'>"
                    for plane in (Plane.AXIAL, Plane.CORONAL)
                )
                cards.append(
                    f"<div class='card k-{p.kind}'><div class='pair'>{imgs}</div>{esc(p.caption)}</div>"
                )
            parts.append("<div class='cards'>" + "".join(cards) + "</div>")
        else:
            parts.append("<p class='dim'>Nothing to show at this threshold.</p>")
        if on_case is not None:
            on_case(case_id)
    parts.append("<h2>Model card</h2>")
    parts.append(f"<pre>{esc(_model_card(provenance))}</pre>")
    parts.append("<h2>Data, licence and citations</h2>")
    parts.append(f"<p>Source: {esc(info.source)}<br>Licence: {esc(info.license)}</p><ul>")
    parts.extend(f"<li>{esc(c)}</li>" for c in info.citation)
    parts.append("</ul>")
    if not synthetic:
        parts.append(f"<p class='dim'>{esc(TCIA_DATA_USAGE_POLICY)}</p>")
    parts.append("<footer>Made by lymphcad. No patient-identifying information is included.</footer>")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>lymphcad report — {esc(info.name)}</title><style>{_STYLE}</style></head><body><main>"
        + "\n".join(parts)
        + "</main></body></html>\n"
    )
    out = Path(out)
    atomic.write_text(out, page)
    return out
