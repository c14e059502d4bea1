"""Plain dicts (JSON, TOML, a torch payload) back into the package's dataclasses: the one lenient reader.

Strict, validated reading of user-written files (unknown keys are errors, values are type-checked) is
:meth:`lymphcad.detector.config.DetectorConfig.updated`; this is for dicts the package wrote itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

D = TypeVar("D")


def dataclass_from_dict(cls: type[D], data: Mapping[str, Any]) -> D:
    """An instance of the dataclass ``cls`` from ``data``: keys it does not know are dropped (files written
    by a newer version), missing ones keep their defaults, lists become tuples (JSON has no tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return cls(**kwargs)
