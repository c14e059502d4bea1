"""Running the review app: a per-launch token, the allowed Host names, uvicorn, one canonical URL."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from lymphcad.errors import LymphcadError
from lymphcad.serve.app import LOOPBACK_HOSTS, create_app
from lymphcad.serve.service import ReviewService


@dataclass(frozen=True)
class Launch:
    """Where the app listens and the Host names it answers to."""

    host: str
    port: int
    allowed_hosts: tuple[str, ...]

    @property
    def url(self) -> str:
        """The one URL to open (loopback when bound to all interfaces)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def plan_launch(host: str, port: int) -> Launch:
    """The Host names to accept: the loopback names, plus ``host`` itself when it is a real address."""
    allowed = list(LOOPBACK_HOSTS)
    name = host.strip("[]")
    if host not in ("0.0.0.0", "::", "") and name not in ("127.0.0.1", "localhost", "::1"):
        allowed.append(f"[{name}]" if ":" in name else name)
    return Launch(host, port, tuple(allowed))


def make_server(service: ReviewService, launch: Launch, *, token: str | None = None) -> uvicorn.Server:
    """An uvicorn server for a review session (not started). Access logs are off: quiet, and no ids logged."""
    app = create_app(service, token=token or secrets.token_urlsafe(32), allowed_hosts=launch.allowed_hosts)
    config = uvicorn.Config(
        app, host=launch.host, port=launch.port, log_level="warning", access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)


def check_port(launch: Launch) -> None:
    """A clear one-line error when the address cannot be bound (port in use, no such address)."""
    family = socket.AF_INET6 if ":" in launch.host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((launch.host.strip("[]"), launch.port))
        except OSError as exc:
            raise LymphcadError(
                f"cannot listen on {launch.host} port {launch.port} ({exc.strerror}); choose another --port"
            ) from None


def serve(service: ReviewService, launch: Launch, *, announce: Callable[[str], None]) -> bool:
    """Run until Ctrl-C; returns True when stopped by a signal."""
    check_port(launch)
    server = make_server(service, launch)
    announce(launch.url)
    server.run()
    return bool(server.should_exit)
