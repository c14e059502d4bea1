"""The review web app (FastAPI): pages, read-only JSON/voxel routes and guarded write routes.

Security of a local app that opens a port:

* ``TrustedHostMiddleware`` accepts only the loopback names (and an explicit ``--host``): DNS rebinding.
* Writes need ``Content-Type: application/json``, a same-origin ``Origin`` / ``Sec-Fetch-Site`` when the
  browser sends them, and the per-launch random token that the page carries in a ``<meta>`` tag, sent
  back in the ``X-Lymphcad-Token`` header (OWASP's custom-request-header defence against CSRF).
* Case ids are looked up in the cohort; nothing else ever becomes part of a file path.
* Responses carry a strict Content-Security-Policy and may not be framed. No PHI is shown: case ids,
  voxels, findings and the dataset's own terms only.
"""

import hmac
import html
from importlib import resources
from typing import Annotated, Final

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lymphcad.errors import LymphcadError
from lymphcad.report.planes import WINDOWS, Plane
from lymphcad.serve.models import CaseOut, CaseState, CohortOut, DecisionIn, ExportOut
from lymphcad.serve.service import ReviewConflict, ReviewService

TOKEN_HEADER: Final = "x-lymphcad-token"
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")
_STATIC: Final = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = (
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every response (streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static_text(name: str) -> str:
    return resources.files("lymphcad.serve").joinpath("static", name).read_text(encoding="utf-8")


def create_app(
    service: ReviewService, *, token: str, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
) -> FastAPI:
    """The FastAPI app of one review session; ``token`` is the per-launch secret required on writes."""
    app = FastAPI(title="lymphcad review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)

    def require_write(request: Request) -> None:
        """Refuse cross-site and token-less writes (checked before the body is read)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPException(415, "write requests must be application/json")
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise HTTPException(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            raise HTTPException(403, "cross-origin request refused")
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise HTTPException(403, "missing or wrong session token (reload the page)")

    def case_id_param(case_id: Annotated[str, Path(max_length=128)]) -> str:
        if not service.has_case(case_id):
            raise HTTPException(404, "no such case")
        return case_id

    CaseId = Annotated[str, Depends(case_id_param)]
    Write = Depends(require_write)

    page = _static_text("index.html").replace("{{TOKEN}}", html.escape(token, quote=True))

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            raise HTTPException(404, "not found")
        return Response(_static_text(name), media_type=media)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/cohort")
    def cohort() -> CohortOut:
        return service.cohort_out()

    @app.get("/api/cases/{case_id}")
    def case(case_id: CaseId) -> CaseOut:
        return service.case_out(case_id)

    @app.get("/api/cases/{case_id}/state")
    def state(case_id: CaseId) -> CaseState:
        return service.state(case_id)

    @app.get("/api/cases/{case_id}/volume")
    def volume(case_id: CaseId) -> StreamingResponse:
        vol = service.volumes.get(case_id)
        following = service.cases.index(case_id) + 1
        if following < len(service.cases):
            service.volumes.prefetch(service.cases[following])
        return StreamingResponse(
            vol.payload(),
            media_type="application/octet-stream",
            headers={"content-length": str(vol.payload_size())},
        )

    @app.get("/api/cases/{case_id}/slice.png")
    def slice_png(
        case_id: CaseId,
        plane: Plane = Plane.AXIAL,
        index: Annotated[int | None, Query(ge=0)] = None,
        width: Annotated[float, Query(gt=0, le=10000)] = WINDOWS["mediastinum"][0],
        level: Annotated[float, Query(ge=-5000, le=5000)] = WINDOWS["mediastinum"][1],
    ) -> Response:
        vol = service.volumes.get(case_id)
        n = vol.array.shape[plane.axis]
        k = n // 2 if index is None else index
        if k >= n:
            raise HTTPException(404, f"{plane.value} slice {k} outside 0..{n - 1}")
        return Response(vol.slice_png(plane, k, width, level), media_type="image/png")

    @app.post("/api/cases/{case_id}/decisions", dependencies=[Write])
    def decide(case_id: CaseId, body: DecisionIn) -> CaseState:
        return service.decide(case_id, body)

    @app.post("/api/export", dependencies=[Write])
    def export() -> ExportOut:
        return service.export()

    @app.exception_handler(ReviewConflict)
    def conflict(_request: Request, exc: ReviewConflict) -> JSONResponse:
        return JSONResponse({"detail": exc.problem}, status_code=409)

    @app.exception_handler(LymphcadError)
    def bad_input(_request: Request, exc: LymphcadError) -> JSONResponse:
        # e.g. a case image that cannot be read: the page shows this one line
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
