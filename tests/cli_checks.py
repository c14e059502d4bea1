"""Helpers for CLI regression tests: run a command, and prove that a refused run changed nothing on disk.

Every "bad input" test asserts three things: the exit code, a one-line message that names the file and the
problem, and that the inputs and earlier outputs are byte-for-byte what they were (:func:`snapshot`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from lymphcad.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run ``lymphcad ARGS`` in this process; (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), to compare before/after a refused run."""
    found: dict[str, str] = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        if not p.exists():
            found[str(p)] = "(absent)"
    return found


def assert_refused(
    capsys: pytest.CaptureFixture[str],
    args: Sequence[object],
    *,
    code: int,
    names: Sequence[object],
    problem: str,
    unchanged: Iterable[Path],
) -> str:
    """Run a command that must fail: exit ``code``, one ``error:`` line naming each of ``names`` and
    containing ``problem``, and every file under ``unchanged`` as before. Returns stderr."""
    unchanged = list(unchanged)
    before = snapshot(unchanged)
    rc, out, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == code, (rc, out, err)
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert problem in lines[0], (problem, lines[0])
    assert "Traceback" not in err
    assert snapshot(unchanged) == before
    return err


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m lymphcad`` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LYMPHCAD_NO_PROGRESS"] = "1"
    env.update(extra)
    return env


def _terminal_like_sigint() -> None:
    """In the child before exec: SIGINT neither ignored nor blocked, whatever the test process did to its
    own disposition or signal mask (both would be inherited across exec and swallow the Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_cli(*args: object, **env: str) -> subprocess.Popen[str]:
    """Start ``python -m lymphcad ARGS`` (SIGINT handled as in a terminal, not ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lymphcad", *[str(a) for a in args]],
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        restore_signals=True,
        preexec_fn=_terminal_like_sigint,
    )


def wait_until(check: object, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Poll ``check()`` until true; fail if the process ends first or the time runs out."""
    assert callable(check)
    end = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before the condition: {out}\n{err}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("timed out waiting for the condition")
        time.sleep(0.05)


def torch_loaded(pid: int) -> bool:
    """Whether process ``pid`` has mapped libtorch (its torch import has started)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
