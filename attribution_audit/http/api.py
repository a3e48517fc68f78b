"""The JSON API under /v1 (OpenAPI at /openapi.json; no /docs: nothing is loaded from a CDN), /metrics, and the
errors as one-line JSON.

Every route parses its input, calls the service, and returns what the CLI's ``--format json`` prints.

Not ``from __future__ import annotations``: FastAPI reads the routes' annotations, which name local dependencies.
"""

import logging
import unicodedata
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from attribution_audit import __version__
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import AttributionAuditError, BusyError, DatabaseError, PartlyRecordedError
from attribution_audit.http.console import add_console
from attribution_audit.http.errors import status_of
from attribution_audit.http.limits import BodyLimit
from attribution_audit.http.metrics import Metrics, MetricsMiddleware
from attribution_audit.services.keys import key_holder
from attribution_audit.services.serving import AttributionService, Upload
from attribution_audit.store.browse import RequestFilter, parse_cursor
from attribution_audit.store.keys import KeyHolder

DEFAULTS = AttributionParams()
logger = logging.getLogger(__name__)
MAX_IMAGES = 64  # per request
MAX_PAGE = 500
DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024  # bytes per image
MAX_SHOWN = 80  # characters of a refused value quoted in an error
CHECKPOINT_HEADER = "X-Checkpoint-Problem"  # the automatic checkpoint after a request's attributions failed


class ApiError(Exception):
    """An HTTP error with a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_line(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    location = first.get("loc", ())[1:]
    if location[:1] == ("images",):  # a part without a filename arrives as text (its bytes): never echoed back
        return "images: send each image as a file part with a filename (curl -F images=@FILE)"
    where = ".".join(str(part) for part in location) or "request"
    given = first.get("input")
    if isinstance(given, str):
        given = given[:MAX_SHOWN]
    shown = f" {given!r}" if isinstance(given, str | int | float) else ""
    return f"{where}{shown}: {first.get('msg', 'invalid value').lower()}"


def _control_character(text: str) -> str | None:
    """The first control character of ``text`` (NUL, escapes, line breaks, DEL, C1: category Cc) as U+XXXX; None if
    there is none. No stored name, id or time holds one (manifests' names lose theirs), and PostgreSQL cannot be sent
    a NUL at all."""
    found = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    return None if found is None else f"U+{ord(found):04X}"


def _plain_parameters(request: Request) -> None:
    """Every route's dependency (API and console alike): a path parameter holding a control character names no
    record (404), a query parameter holding one is refused (400), on either database, before any query. The value is
    not echoed (a console address may carry a key)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (found := _control_character(value)):
            raise ApiError(404, f"{name}: no record has one with a control character ({found}); check the address")
    for name, value in request.query_params.multi_items():
        if found := _control_character(name + value):
            shown = name if name.isprintable() else repr(name[:MAX_SHOWN])
            raise ApiError(400, f"{shown}: holds a control character ({found}); send the parameter without it")


def create_app(service: AttributionService, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The service's ASGI app over an open :class:`AttributionService`; an image over ``max_upload_bytes``, or a
    request body over four times that, is refused before it is decoded."""
    app = FastAPI(
        docs_url=None,  # no Swagger UI nor ReDoc: they load scripts from a CDN (offline, and an authenticated origin)
        redoc_url=None,
        dependencies=[Depends(_plain_parameters)],
        title="attribution-audit",
        version=__version__,
        description="Attribute generated images to catalogued works; every result is in the hash-chained audit log "
        "before it is returned. Send `Authorization: Bearer KEY` (create keys with `attribution-audit keys create`).",
    )
    metrics = Metrics(service)
    bearer = HTTPBearer(auto_error=False, description="An API key from `attribution-audit keys create NAME`.")

    @app.exception_handler(AttributionAuditError)
    def _library_error(_: Request, exc: AttributionAuditError) -> JSONResponse:
        response = error(status_of(exc), str(exc))
        if isinstance(exc, BusyError):  # no room for the request's pixels now: it may come back
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(PartlyRecordedError)
    def _partly_recorded(_: Request, exc: PartlyRecordedError) -> JSONResponse:
        """The failure, with the results recorded before it (in the log: the client must not send them again)."""
        cause = exc.cause
        status = status_of(cause) if isinstance(cause, AttributionAuditError) else 500
        if not isinstance(cause, AttributionAuditError):
            logger.error("unexpected error", exc_info=cause)
        recorded = [attribution.as_json() for attribution in exc.recorded]
        return JSONResponse({"error": str(exc), "recorded": recorded}, status_code=status)

    @app.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error", exc_info=exc)  # the traceback goes to the server's log, not to the client
        return error(500, f"internal error ({type(exc).__name__}); nothing was returned unlogged; see the server log")

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, _validation_line(exc))

    def holder(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> KeyHolder:
        if credentials is None:
            raise ApiError(
                401, "no API key: send Authorization: Bearer KEY (create one with `attribution-audit keys create NAME`)"
            )
        found = key_holder(service.audit, credentials.credentials)
        if found is None:
            raise ApiError(401, "unknown API key; create one with `attribution-audit keys create NAME`")
        return found

    def writer(who: Annotated[KeyHolder, Depends(holder)]) -> KeyHolder:
        if who.role != "writer":
            raise ApiError(403, f"key {who.name!r} is a reader key: it cannot attribute; use a writer key")
        return who

    Reader = Annotated[KeyHolder, Depends(holder)]

    def read_upload(upload: UploadFile) -> Upload:
        name = upload.filename or "upload"
        data = upload.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(413, f"{name}: upload is over the {max_upload_bytes:,}-byte limit; send a smaller image")
        return Upload(name, data)

    @app.post("/v1/attributions", tags=["attributions"])
    def attribute(
        who: Annotated[KeyHolder, Depends(writer)],
        response: Response,
        images: Annotated[list[UploadFile], File(description="Generated image(s); repeat the field for several.")],
        k: Annotated[int, Form(description="Number of nearest works to attribute.")] = DEFAULTS.k,
        max_distance: Annotated[float | None, Form(description="Keep only works within this distance.")] = None,
        space: Annotated[str, Form(description="content, style or fused.")] = DEFAULTS.space,
        verify: Annotated[str, Form(description="always, off or sample:RATE.")] = DEFAULTS.verify,
        shares: Annotated[str, Form(description="equal or similarity.")] = DEFAULTS.shares,
        top: Annotated[
            str, Form(description="The top artist: share (largest share), nearest or centroid (learned spaces).")
        ] = DEFAULTS.top,
    ) -> list[dict[str, Any]]:
        """Attribute the images; each result is returned once it is committed to the audit log (as
        `attribute --format json` prints them), with `notes` (the lines `attribute` prints as `note:`; an empty
        list when none): in a learned space fitted before some of its works' artists were ingested, that they have
        no centroid until it is refitted; in one whose own confidence model was fitted at another K, that the
        default formula scored them; for an image of one colour throughout, that its neighbours share only that
        colour (that result's alone, and not part of its record). When the automatic checkpoint after them fails, they
        are returned all the same (they are logged: do not send them again) with the failure in the
        `X-Checkpoint-Problem` header (also in the server's log and the `attribution_checkpoint_failures` metric)."""
        if len(images) > MAX_IMAGES:
            raise ApiError(413, f"{len(images)} images in one request: send at most {MAX_IMAGES}")
        try:
            params = AttributionParams(
                k=k, max_distance=max_distance, space=space, verify=verify, shares=shares, top=top
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        uploads = [read_upload(upload) for upload in images]
        done = service.submit(uploads, params, who.name)
        if done.checkpoint_problem:  # the results are logged: answered, with the failure beside them
            response.headers[CHECKPOINT_HEADER] = done.checkpoint_problem.encode("ascii", "replace").decode()
        return [result.as_json() | {"notes": done.notes_of(i)} for i, result in enumerate(done.attributions)]

    @app.get("/v1/attributions/{request_id}", tags=["attributions"])
    def show(request_id: str, _: Reader) -> dict[str, Any]:
        """One logged attribution (as `audit show --format json`), with `notes` as its page shows them: artists
        ingested before the request but after its learned space's fit (an empty list when none)."""
        attribution = service.attribution(request_id)
        return attribution.as_json() | {"notes": service.notes(attribution)}

    @app.get("/v1/attributions", tags=["attributions"])
    def list_(
        _: Reader,
        artist: str | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        since: Annotated[datetime | None, Query(description="ISO time (UTC if no zone); inclusive.")] = None,
        until: Annotated[datetime | None, Query(description="ISO time (UTC if no zone); exclusive.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        low_confidence: Annotated[
            bool, Query(description="Only those v_low_confidence lists: confidence below 0.5, or of one colour.")
        ] = False,
    ) -> dict[str, Any]:
        """Logged attributions, newest first, a page at a time; `next_cursor` fetches the next page."""
        try:
            where = RequestFilter(
                artist, min_confidence, max_confidence, since, until, limit, parse_cursor(cursor), low_confidence
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        page = service.attributions(where)
        return {"attributions": [a.as_json() for a in page], "next_cursor": _next_cursor(page, limit)}

    @app.get("/v1/artists/shares", tags=["reports"])
    def shares(_: Reader, period: str = "day") -> dict[str, Any]:
        """Per day or month (UTC) and artist: attributions and the sum of their shares (production requests, images
        of one colour left out)."""
        try:
            return {"period": period, "shares": service.shares(period)}
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @app.get("/v1/audit/verify", tags=["audit"])
    def verify(_: Reader) -> dict[str, Any]:
        """Verify every hash and link of the audit chain now, compare it with the witness file's last checkpoint and
        the views and triggers with the migrations (`schema`), the stored confidence models and the learned space
        versions with the records they scored (`models`, `spaces`; `ok` null where not checked): `ok` only when all
        hold (the verdict of `audit verify --format json`, which this answers, with `checked` the number of records
        verified and `problem` the reason in one line)."""
        verification = service.verify()
        return {
            "verified_at": verification.at.isoformat(),
            **verification.as_json(),
            "checked": verification.report.checked,
            "problem": verification.problem,
        }

    @app.get("/v1/health", tags=["service"])
    def health(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> JSONResponse:
        """Whether the audit database answers: `{"status": "ok"}` (200) or `{"status": "unavailable"}` (503), for
        load balancers (no key needed); with a key, also the database, schema, vector store and embedder. Nothing
        more is said while the database is down: the key cannot be checked then."""
        try:
            details = service.health()
        except DatabaseError:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        if credentials is None:
            return JSONResponse({"status": "ok"})
        holder(credentials)  # an unknown key is refused (401), not answered as anonymous
        return JSONResponse({"status": "ok", **details})

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    add_console(app, service)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=4 * max_upload_bytes)
    return app


def _next_cursor(page: list[Attribution], limit: int) -> str | None:
    return str(page[-1].seq) if len(page) == limit else None
