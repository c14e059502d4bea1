"""lymphcad: computer-aided detection of lymph nodes in contrast-enhanced CT."""

from __future__ import annotations

__version__ = "0.1.0"
