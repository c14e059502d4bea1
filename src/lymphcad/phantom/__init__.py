"""Synthetic contrast-enhanced CT phantom with lymph nodes and their mimics (spec: shared/docs/phantom-spec.md).

Entry points: :func:`generate_cohort` (a cohort on disk), :func:`generate_case` (one case in memory),
:func:`lymphcad.phantom.insert.insert_cohort` (nodes inserted into a real CT background).
"""

from __future__ import annotations

from lymphcad.phantom.config import GENERATOR_VERSION, PRESETS
from lymphcad.phantom.generate import PhantomCase, generate_case, generate_cohort

__all__ = ["GENERATOR_VERSION", "PRESETS", "PhantomCase", "generate_case", "generate_cohort"]
