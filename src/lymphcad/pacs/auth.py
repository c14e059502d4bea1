"""DICOMweb credentials: read from files, never from the command line, never printed or logged.

A password or token on the command line would show in the process list and shell history, so only the
user name is an option; the secret comes from a file (first line, surrounding whitespace stripped).
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.auth import HTTPBasicAuth

from lymphcad.errors import InputError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Basic (user + password) or bearer-token credentials; ``repr`` never shows the secret."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def session(self) -> requests.Session:
        """A requests session that sends these credentials with every request."""
        session = requests.Session()
        if self.token is not None:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user is not None and self.password is not None:
            session.auth = HTTPBasicAuth(self.user, self.password)
        return session


def read_secret(path: Path) -> str:
    """The first line of a secret file; InputError when missing or empty (the message never shows it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the secret file ({exc.strerror})", path) from None
    lines = text.strip().splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise InputError("the secret file is empty", path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s: the secret file is readable by other users (chmod 600 it)", path)
    return secret


def credentials(user: str | None, password_file: Path | None, token_file: Path | None) -> Credentials:
    """Credentials from the CLI options: ``--user U --password-file F`` or ``--token-file F`` (or none)."""
    if token_file is not None and (user is not None or password_file is not None):
        raise UsageError("give either --token-file or --user with --password-file, not both")
    if token_file is not None:
        return Credentials(token=read_secret(token_file))
    if (user is None) != (password_file is None):
        raise UsageError("--user and --password-file go together")
    if user is not None and password_file is not None:
        return Credentials(user=user, password=read_secret(password_file))
    return Credentials()
