"""The lymph-node detector: a compact 3D centre-heatmap network (CenterNet/CPM-Net style), pure PyTorch.

Modules, one job each:

* :mod:`~lymphcad.detector.config` — the typed training/inference configuration (TOML in, TOML out).
* :mod:`~lymphcad.detector.plan` — the preprocessing plan (target spacing, HU window, normalisation),
  computed once from a training cohort and saved as ``plan.json``; resampling of a CT onto the plan's grid.
* :mod:`~lymphcad.detector.network` — the network (encoder-decoder, heads at stride 2).
* :mod:`~lymphcad.detector.targets` — target encoding (Gaussian heatmap, size, offset) and decoding
  (peaks, non-maximum suppression in mm).
* :mod:`~lymphcad.detector.sampling` — patch sampling with positive oversampling and augmentation.
* :mod:`~lymphcad.detector.common` — device choice, the learning-rate schedule, loading training cases.
* :mod:`~lymphcad.detector.fpr` — the second stage (false-positive reduction): its network and scoring.
* :mod:`~lymphcad.detector.model` — loading/saving a trained model folder (``model.pt`` + ``plan.json``,
  optionally ``fpr.pt``).
* :mod:`~lymphcad.detector.infer` — sliding-window inference: :func:`detect_volume`.
* :mod:`~lymphcad.detector.precision` — the network's number format at inference (float32, bfloat16, …).
* :mod:`~lymphcad.detector.train` — the training loop (checkpoints, resume, validation) and the pieces the
  mixed-data loop (:mod:`~lymphcad.detector.trainmix`) shares with it.
* :mod:`~lymphcad.detector.history` — a run's per-epoch history (``history.csv``) and its curves.
* :mod:`~lymphcad.detector.fpr_train` — training the second stage on the first stage's candidates.

Imports point one way: inference (``infer`` → ``model`` → ``fpr``) never imports training (``train``,
``fpr_train``), and ``tests/test_import_graph.py`` fails on any import cycle in the package.

torch is imported by these modules, never by ``lymphcad`` itself, so the CLI starts fast.
"""

from __future__ import annotations
