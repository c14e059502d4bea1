"""A trained model on disk: a folder with ``model.pt`` (weights + network config) and ``plan.json``.

``model.pt`` is a plain dict saved with :func:`torch.save` and read back with ``weights_only=True`` (no
pickled code): ``{"format": "lymphcad-centernet3d", "version": 1, "name", "network": {...},
"detect": {...}, "state_dict": {...}, "meta": {...}}``. Training checkpoints (``RUN/checkpoints``) hold
the same keys plus the optimiser state; any of them can be loaded as a model. An ensemble
(:class:`~lymphcad.detector.network.EnsembleNet`) is stored as version 2: ``"members"`` (a list of state
dicts of the one architecture ``"network"``) in place of ``"state_dict"``; a reader that knows only version 1
refuses it rather than loading one member.

Shipped models live in ``lymphcad/models/<name>/`` inside the package and are found by name.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import torch

from lymphcad import atomic
from lymphcad.detector.config import DetectConfig, NetworkConfig, TrainConfig, load_config, plain
from lymphcad.detector.fpr import FPR_FILE, FPRModel, load_fpr
from lymphcad.detector.network import CenterNet3D, DetectorNet, EnsembleNet, build_network
from lymphcad.detector.plan import Plan, load_plan, save_plan
from lymphcad.errors import InputError
from lymphcad.hashing import file_sha256
from lymphcad.records import dataclass_from_dict

MODEL_FORMAT: Final = "lymphcad-centernet3d"
MODEL_VERSION: Final = 1
#: the payload version of an ensemble (``"members"`` instead of ``"state_dict"``)
ENSEMBLE_VERSION: Final = 2
#: the model ``lymphcad detect`` uses without ``--model``
DEFAULT_MODEL: Final = "centernet3d_realmix_v10"


#: keys of ``meta`` holding the truth thresholds the model was trained with (see :func:`truth_thresholds`)
THRESHOLD_KEYS: Final = ("enlarged_mm", "ignore_below_mm")


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference (eval mode) with its plan and default detection settings."""

    name: str
    network: DetectorNet
    plan: Plan
    detect: DetectConfig
    sha256: str
    path: Path
    meta: dict[str, Any]
    #: the optional second stage (``fpr.pt`` beside ``model.pt``)
    fpr: FPRModel | None = None
    #: the training truth's thresholds: nodes with a short axis ≥ enlarged_mm were positives, those in
    #: [ignore_below_mm, enlarged_mm) ignored (the second stage labels its candidates the same way)
    enlarged_mm: float = TrainConfig.enlarged_mm
    ignore_below_mm: float = TrainConfig.ignore_below_mm

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights, plus the second stage's when present (for provenance)."""
        if self.fpr is None:
            return self.sha256
        return f"{self.sha256}+fpr:{file_sha256(self.fpr.path)}"


def _state(network: CenterNet3D) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its floating-point tensors as float16 (integer buffers such as BatchNorm's counter kept)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def model_payload(
    network: DetectorNet, *, name: str, detect: DetectConfig, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The dict stored in ``model.pt`` (version 2 with ``"members"`` for an ensemble)."""
    ensemble = isinstance(network, EnsembleNet)
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": ENSEMBLE_VERSION if ensemble else MODEL_VERSION,
        "name": name,
        "network": dataclasses.asdict(network.config),
        "detect": plain(dataclasses.asdict(detect)),
    }
    # the key order is part of the file's bytes: a single network's stays what it always was
    if isinstance(network, EnsembleNet):
        payload["members"] = [_state(m) for m in network.members if isinstance(m, CenterNet3D)]
    else:
        payload["state_dict"] = _state(network)
    payload["meta"] = meta or {}
    return payload


def save_model(
    folder: str | Path,
    network: DetectorNet,
    plan: Plan,
    *,
    name: str,
    detect: DetectConfig,
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``folder/model.pt`` and ``folder/plan.json``; ``half`` stores float weights as float16."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = model_payload(network, name=name, detect=detect, meta=meta)
    if half and "members" in payload:
        payload["members"] = [_half(st) for st in payload["members"]]
    elif half:
        payload["state_dict"] = _half(payload["state_dict"])
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic.write_bytes(folder / "model.pt", buf.getvalue())
    save_plan(folder / "plan.json", plan)
    return folder / "model.pt"


def read_payload(path: str | Path) -> dict[str, Any]:
    """Read and check a ``model.pt`` or checkpoint; a damaged file raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (zipfile, pickle, RuntimeError) for a bad file
        raise InputError(
            f"cannot read model/checkpoint: the file is damaged or not a lymphcad model "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            path,
        ) from exc
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise InputError(f"not a lymphcad detector model (expected format {MODEL_FORMAT!r})", path)
    version = int(data.get("version", 0))
    if version not in (MODEL_VERSION, ENSEMBLE_VERSION):
        raise InputError(
            f"model version {data.get('version')} is not supported "
            f"(expected {MODEL_VERSION}, or {ENSEMBLE_VERSION} for an ensemble)",
            path,
        )
    for key in ("network", "state_dict" if version == MODEL_VERSION else "members"):
        if key not in data:
            raise InputError(f"model file lacks {key!r}", path)
    if version == ENSEMBLE_VERSION and (not isinstance(data["members"], list) or len(data["members"]) < 2):
        raise InputError("an ensemble model file needs a list of at least two member state dicts", path)
    return data


def _network_with(config: NetworkConfig, state_dict: dict[str, Any], where: str | Path) -> CenterNet3D:
    net = build_network(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the network ({str(exc).splitlines()[0]})", where) from exc
    return net


def network_from_payload(data: dict[str, Any], *, where: str | Path) -> CenterNet3D:
    """Build the one network described by a payload and load its weights (float32); an ensemble raises
    InputError (training starts from or resumes one network: :func:`detector_from_payload` for inference)."""
    if "members" in data:
        raise InputError(
            "an ensemble model cannot be trained on or warm-started from; name one member", where
        )
    return _network_with(dataclass_from_dict(NetworkConfig, data["network"]), data["state_dict"], where)


def detector_from_payload(data: dict[str, Any], *, where: str | Path) -> DetectorNet:
    """The network or ensemble a payload describes, with its weights (float32), for inference."""
    if "members" not in data:
        return network_from_payload(data, where=where)
    config = dataclass_from_dict(NetworkConfig, data["network"])
    return EnsembleNet([_network_with(config, st, where) for st in data["members"]])


def ensemble_of(sources: list[str | Path], folder: str | Path, *, name: str, half: bool = False) -> Path:
    """Write an ensemble of the models at ``sources`` (paths, run folders or shipped names) to ``folder``.

    The members must share one architecture and the plan's input grid (spacing, HU window); the first
    model's plan and detection settings are kept. No calibration is copied: a mean of heatmaps is not
    calibrated like any one of them, so it is fitted anew.
    """
    members: list[CenterNet3D] = []
    first: LoadedModel | None = None
    for src in sources:
        m = load_model(src)
        if not isinstance(m.network, CenterNet3D):
            raise InputError("an ensemble's members must be single networks", m.path)
        if first is None:
            first = m
        elif (m.plan.spacing_mm, m.plan.hu_window) != (first.plan.spacing_mm, first.plan.hu_window):
            raise InputError(
                f"plan grid (spacing {m.plan.spacing_mm} mm, HU window {m.plan.hu_window}) differs from the "
                f"first member's ({first.plan.spacing_mm} mm, {first.plan.hu_window})",
                m.path,
            )
        members.append(m.network)
    if first is None:
        raise ValueError("no member models given")
    meta: dict[str, Any] = {"ensemble_of": [str(s) for s in sources]}
    for key in THRESHOLD_KEYS:
        meta[key] = getattr(first, key)
    return save_model(
        folder, EnsembleNet(members), first.plan, name=name, detect=first.detect, meta=meta, half=half
    )


def truth_thresholds(path: Path, meta: dict[str, Any]) -> tuple[float, float]:
    """``(enlarged_mm, ignore_below_mm)`` a model was trained with.

    From its ``meta`` (written by the training loop), else from the training config kept with it (a run
    folder's ``config.toml``, a shipped model's ``training_config.toml``), else the defaults of
    :class:`~lymphcad.detector.config.TrainConfig`.
    """
    if all(k in meta for k in THRESHOLD_KEYS):
        return float(meta[THRESHOLD_KEYS[0]]), float(meta[THRESHOLD_KEYS[1]])
    for cand in (
        path.parent / "training_config.toml",
        path.parent / "config.toml",
        path.parent.parent / "config.toml",
    ):
        if cand.is_file():
            train = load_config(cand).train
            return train.enlarged_mm, train.ignore_below_mm
    return TrainConfig.enlarged_mm, TrainConfig.ignore_below_mm


def shipped_models() -> list[str]:
    """Names of the models inside the package."""
    root = resources.files("lymphcad.models")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.pt").is_file())


def resolve_model_path(model: str | Path | None) -> Path:
    """A model folder (or model.pt) from a path, a run folder, a shipped name, or None (the default).

    A run folder resolves to ``RUN/model`` (the best/last exported model), else its latest checkpoint.
    """
    if model is None:
        model = DEFAULT_MODEL
    p = Path(model)
    if p.exists():
        if p.is_file():
            return p
        for cand in (p / "model.pt", p / "model" / "model.pt"):
            if cand.is_file():
                return cand
        ckpts = sorted((p / "checkpoints").glob("epoch_*.pt")) if (p / "checkpoints").is_dir() else []
        if ckpts:
            return ckpts[-1]
        raise InputError("no model.pt, model/model.pt or checkpoints/epoch_*.pt in this folder", p)
    name = str(model)
    if "/" not in name and "\\" not in name:
        shipped = resources.files("lymphcad.models") / name / "model.pt"
        if shipped.is_file():
            return Path(str(shipped))
        raise InputError(
            f"unknown model {name!r}: not a path and not a shipped model (shipped: {', '.join(shipped_models()) or 'none'})"
        )
    raise InputError("model path does not exist", p)


def load_model(model: str | Path | None = None, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference from a path, run folder or shipped name (None = the default model).

    The plan is read from ``plan.json`` beside ``model.pt`` (for a checkpoint: the run folder's plan.json).
    """
    path = resolve_model_path(model)
    data = read_payload(path)
    net = detector_from_payload(data, where=path)
    net.to(device)
    net.eval()
    plan_path = None
    for cand in (path.parent / "plan.json", path.parent.parent / "plan.json"):
        if cand.is_file():
            plan_path = cand
            break
    if plan_path is None:
        raise InputError("plan.json not found beside the model (or in its run folder)", path)
    plan = load_plan(plan_path)
    detect = dataclass_from_dict(DetectConfig, data.get("detect", {}))
    fpr_path = path.parent / FPR_FILE
    meta = dict(data.get("meta", {}))
    enlarged_mm, ignore_below_mm = truth_thresholds(path, meta)
    return LoadedModel(
        name=str(data.get("name", path.parent.name)),
        network=net,
        plan=plan,
        detect=detect,
        sha256=file_sha256(path),
        path=path,
        meta=meta,
        fpr=load_fpr(fpr_path, device=device) if fpr_path.is_file() else None,
        enlarged_mm=enlarged_mm,
        ignore_below_mm=ignore_below_mm,
    )
