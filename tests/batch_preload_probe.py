"""A module for the batch executor tests to preload: importing it appends ``PID TIME`` to the file named by
``LYMPHCAD_TEST_PRELOAD_PROBE``, so a test sees which process imported it, and when."""

from __future__ import annotations

import os
import time

_PROBE = os.environ.get("LYMPHCAD_TEST_PRELOAD_PROBE")
if _PROBE:
    with open(_PROBE, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
