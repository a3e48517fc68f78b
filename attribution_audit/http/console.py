"""The web console under /console: server-rendered pages (the shared templates of reporting/) for anyone with a key.

Signing in (the form, posted: a key in the address, ``?key=``, is refused) exchanges the key for a session cookie
(HttpOnly, SameSite=Lax, kept in memory for :data:`SESSION_HOURS`, ended on the first page after its key is
revoked: each page asks the database); every page is a plain GET with no script, and the
one form that changes something (verify now) carries a token derived from the session (against cross-site posts).

Not ``from __future__ import annotations``: FastAPI reads the routes' annotations.
"""

import hmac
import secrets
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Cookie, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from attribution_audit.domain.confidence import LOW_CONFIDENCE
from attribution_audit.errors import AttributionAuditError
from attribution_audit.http.errors import status_of
from attribution_audit.reporting.html import render
from attribution_audit.services.audit_log import browse_attributions, request_page, shares_over_time
from attribution_audit.services.keys import key_holder, key_valid
from attribution_audit.services.report import log_counts
from attribution_audit.services.serving import AttributionService
from attribution_audit.store.browse import RequestFilter, parse_cursor
from attribution_audit.store.keys import KeyHolder

COOKIE = "attribution_audit_session"
SESSION_HOURS = 8
TIMELINE_DAYS = 31
KEY_IN_ADDRESS = (
    "a key in the address (?key=) is refused: addresses stay in browser history and proxy logs; sign in with this form"
)
COLOURS = ("#3b6ea8", "#e07b39", "#5aa469", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")


class Sessions:
    """Session tokens -> key holders, in memory (a restart signs everyone out)."""

    def __init__(self) -> None:
        self._by_token: dict[str, tuple[KeyHolder, datetime]] = {}
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)

    def csrf(self, token: str | None) -> str:
        """The form token of a session: a page of another site cannot know it, so cannot post for the officer."""
        return hmac.new(self._secret, (token or "").encode(), "sha256").hexdigest()

    def open(self, who: KeyHolder) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._by_token[token] = (who, datetime.now(UTC) + timedelta(hours=SESSION_HOURS))
        return token

    def holder(self, token: str | None) -> KeyHolder | None:
        with self._lock:
            found = self._by_token.get(token or "")
            if found is None or found[1] < datetime.now(UTC):
                self._by_token.pop(token or "", None)
                return None
            return found[0]

    def close(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)


def _safe_next(target: str | None) -> str:
    """Only a console path: never a redirect to another site."""
    return target if target and target.startswith("/console") and "//" not in target else "/console/"


# No page may be framed by another site (a framed "verify now" could be clicked through), none loads anything from
# elsewhere, and no address (a ``?key=`` one) is sent on as a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _number(name: str, text: str | None, low: float = 0.0, high: float = 1.0) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r}: a number between {low:g} and {high:g}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} {text!r}: a number between {low:g} and {high:g}")
    return value


def _day(name: str, text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r}: a date as YYYY-MM-DD") from None


def add_console(app: FastAPI, service: AttributionService) -> None:
    """Register the console's routes on the API's app."""
    sessions = Sessions()
    Session = Annotated[str | None, Cookie(alias=COOKIE)]

    def signed_in(request: Request, response: Response, who: KeyHolder) -> Response:
        # Secure when the client came over HTTPS (a TLS proxy on loopback says so: X-Forwarded-Proto).
        response.set_cookie(
            COOKIE,
            sessions.open(who),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            max_age=SESSION_HOURS * 3600,
        )
        return response

    def login_page(next_: str, message: str | None = None, status: int = 200) -> HTMLResponse:
        return _page(render("login.html", next=_safe_next(next_), message=message), status)

    def sign_in(request: Request, key: str | None, next_: str) -> Response:
        who = key_holder(service.audit, key) if key else None
        if who is None:
            return login_page(next_, "unknown API key; create one with `attribution-audit keys create NAME`", 401)
        return signed_in(request, RedirectResponse(_safe_next(next_), status_code=303), who)

    def required(request: Request, token: str | None) -> KeyHolder | Response:
        who = sessions.holder(token)
        if who is not None and not key_valid(service.audit, who.name):  # revoked since signing in
            sessions.close(token)
            who = None
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/console/login?" + urlencode({"next": target}), status_code=303)
        return who

    @app.get("/console/login", include_in_schema=False)
    def login_form(key: str | None = None, next: str = "/console/") -> Response:
        if key is not None:  # refused, and never echoed or logged: the address is already in history and logs
            return login_page(next, KEY_IN_ADDRESS, 400)
        return login_page(next)

    @app.post("/console/login", include_in_schema=False)
    def login(request: Request, key: Annotated[str, Form()], next: Annotated[str, Form()] = "/console/") -> Response:
        return sign_in(request, key, next)

    @app.post("/console/logout", include_in_schema=False)
    def logout(token: Session = None) -> Response:
        sessions.close(token)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/console/", include_in_schema=False)
    def dashboard(request: Request, token: Session = None) -> Response:
        who = required(request, token)
        if isinstance(who, Response):
            return who
        counts = log_counts(service.audit)
        shares = shares_over_time(service.audit, "day")
        periods = sorted({row["period"] for row in shares})[-TIMELINE_DAYS:]
        artists = sorted({row["artist"] for row in shares if row["period"] in periods})
        buckets = counts["confidence_distribution"]
        return _page(
            render(
                "dashboard.html",
                console=True,
                who=who,
                counts=counts,
                chain=service.last_verification,
                periods=periods,
                artists=artists,
                values={(row["period"], row["artist"]): row["attributions"] for row in shares},
                colours=COLOURS,
                buckets=[b["requests"] for b in buckets],
                edges=[b["from"] for b in buckets] + [buckets[-1]["to"]],
                csrf=sessions.csrf(token),
            )
        )

    @app.post("/console/verify", include_in_schema=False)
    def verify(request: Request, token: Session = None, csrf: Annotated[str, Form()] = "") -> Response:
        who = required(request, token)
        if isinstance(who, Response):
            return who
        if not hmac.compare_digest(csrf, sessions.csrf(token)):
            message = "the form was not sent from this console's dashboard; open the dashboard and press the button"
            return _page(render("message.html", console=True, who=who, heading="Not verified", message=message), 403)
        service.verify()
        return RedirectResponse("/console/", status_code=303)

    @app.get("/console/requests", include_in_schema=False)
    def requests(
        request: Request,
        token: Session = None,
        artist: str | None = None,
        min_confidence: str | None = None,
        max_confidence: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: str | None = None,
        cursor: str | None = None,
        low: str | None = None,
    ) -> Response:
        who = required(request, token)
        if isinstance(who, Response):
            return who
        shown: dict[str, Any] = {
            "artist": artist or None,
            "min_confidence": min_confidence or None,
            "max_confidence": max_confidence or None,
            "since": since or None,
            "until": until or None,
            "limit": limit or "50",
            "low": "1" if low == "1" else None,
        }
        error, rows, older = None, [], None
        try:
            size = int(_number("per page", shown["limit"], 1, 500) or 50)
            first, last = _day("since", since), _day("until", until)
            where = RequestFilter(
                artist=shown["artist"],
                min_confidence=_number("confidence from", min_confidence),
                max_confidence=_number("confidence to", max_confidence),
                since=datetime.combine(first, datetime.min.time(), UTC) if first else None,
                until=datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC) if last else None,
                limit=size,
                before_seq=parse_cursor(cursor),
                low_confidence=low == "1",
            )
            rows = browse_attributions(service.audit, where)
            if len(rows) == size:
                older = "/console/requests?" + urlencode(
                    {**{k: v for k, v in shown.items() if v is not None}, "cursor": rows[-1].seq}
                )
        except ValueError as exc:
            error = str(exc)
        newer = "/console/requests?" + urlencode({k: v for k, v in shown.items() if v is not None}) if cursor else None
        shares = shares_over_time(service.audit, "month")
        return _page(
            render(
                "requests.html",
                console=True,
                who=who,
                filters=shown,
                artists=sorted({row["artist"] for row in shares}),
                rows=rows,
                low_count=sum(1 for a in rows if a.confidence < LOW_CONFIDENCE or a.one_colour),
                error=error,
                older=older,
                newer=newer,
            ),
            400 if error else 200,
        )

    @app.get("/console/requests/{request_id}", include_in_schema=False)
    def request_view(request_id: str, request: Request, token: Session = None) -> Response:
        who = required(request, token)
        if isinstance(who, Response):
            return who
        try:
            page = request_page(service.audit, request_id, console=True, who=who, chain=service.last_verification)
        except AttributionAuditError as exc:
            message = render("message.html", console=True, who=who, heading="Cannot show this request", message=exc)
            return _page(message, status_of(exc))
        return _page(page)
