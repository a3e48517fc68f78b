"""The web console of ``serve``: sign-in, the request list with filters and paging, the request page (thumbnails
checked against their recorded digests), the dashboard; over HTTP, and rendered in headless Chromium (no console
error, a screenshot of each page under the test's folder)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from conftest import Ingested, ingest_once
from servers import Server, create_key, revoke_key, running_server
from test_reporting import _chromium

from attribution_audit.embedding.base import Embedder
from attribution_audit.reporting.html import CHROMIUM_FLAGS
from attribution_audit.sources.synthetic import DemoCatalogue


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Iterator[tuple[Server, str, list[dict[str, object]], Ingested]]:
    """A server with every demo query attributed (K = 5) by a writer, and a reader key for the console."""
    ingested = ingest_once(tmp_path_factory.mktemp("console-ingested"), sqlite_template, demo_catalogue.manifest)
    url = f"sqlite:///{ingested.database}"
    writer = create_key(ingested.data_dir, url, "image-generator")
    reader = create_key(ingested.data_dir, url, "officer", role="reader")
    log = tmp_path_factory.mktemp("console-log") / "serve.log"
    with running_server(ingested.data_dir, url, log) as server, server.client(writer) as http:
        images = [("images", (q.path.name, q.path.read_bytes(), "image/png")) for q in demo_catalogue.queries]
        made = http.post("/v1/attributions", files=images, data={"k": "5"})
        assert made.status_code == 200, made.text
        yield server, reader, made.json(), ingested


@contextmanager
def signed_in(server: Server, key: str) -> Iterator[httpx.Client]:
    """A browser-like client with the console's session cookie."""
    with server.client(timeout=120) as client:
        response = client.post("/console/login", data={"key": key, "next": "/console/"})
        assert response.status_code == 303 and response.headers["location"] == "/console/"
        assert "httponly" in response.headers["set-cookie"].lower()
        yield client


def test_signing_in(console: tuple[Server, str, list[dict[str, object]], Ingested]) -> None:
    server, reader, _, _ = console
    with server.client() as anonymous:
        bounced = anonymous.get("/console/requests?artist=Ada+Vermeer")
        assert bounced.status_code == 303
        assert bounced.headers["location"] == "/console/login?" + urlencode(
            {"next": "/console/requests?artist=Ada+Vermeer"}
        )
        wrong = anonymous.post("/console/login", data={"key": "aa_wrong", "next": "/console/"})
        assert wrong.status_code == 401 and "unknown API key" in wrong.text
        # Signed in: a session cookie, then the page asked for (never another site).
        once = anonymous.post("/console/login", data={"key": reader, "next": "https://evil.example/"})
        assert once.status_code == 303 and once.headers["location"] == "/console/"
        assert anonymous.get("/console/").status_code == 200
        # Behind a TLS proxy on loopback (X-Forwarded-Proto: https) the cookie is Secure; over plain HTTP it is not.
        proxied = anonymous.post(
            "/console/login", data={"key": reader}, headers={"X-Forwarded-Proto": "https"}, follow_redirects=False
        )
        assert "secure" in proxied.headers["set-cookie"].lower()
        assert "secure" not in once.headers["set-cookie"].lower()
    with signed_in(server, reader) as client:
        assert "signed in as officer (reader)" in client.get("/console/").text
        client.post("/console/logout")
        assert client.get("/console/").status_code == 303


def test_a_revoked_key_ends_its_console_session(console: tuple[Server, str, list[dict[str, object]], Ingested]) -> None:
    server, _, _, ingested = console
    url = f"sqlite:///{ingested.database}"
    key = create_key(ingested.data_dir, url, "leaked-officer", role="reader")
    with signed_in(server, key) as client:
        assert client.get("/console/").status_code == 200
        revoke_key(ingested.data_dir, url, "leaked-officer")
        assert client.get("/console/").status_code == 303  # back to the sign-in form
        again = client.post("/console/login", data={"key": key, "next": "/console/"})
        assert again.status_code == 401 and "unknown API key" in again.text


def test_request_list_filters_and_pages(console: tuple[Server, str, list[dict[str, object]], Ingested]) -> None:
    server, reader, made, _ = console
    with signed_in(server, reader) as client:
        everything = client.get("/console/requests").text
        assert all(str(r["request_id"]) in everything for r in made)
        artist = str(made[0]["top_artist"])
        filtered = client.get("/console/requests", params={"artist": artist}).text
        expected = [r for r in made if artist in r["artist_shares"]]  # type: ignore[operator]
        assert len(re.findall(r'href="/console/requests/[0-9a-f-]{36}"', filtered)) == len(expected)
        lowest = min(float(str(r["confidence"])) for r in made)
        low = client.get("/console/requests", params={"max_confidence": f"{lowest + 1e-6:.6f}"}).text
        assert len(re.findall(r'href="/console/requests/[0-9a-f-]{36}"', low)) == 1
        expected_low = {str(r["request_id"]) for r in made if float(str(r["confidence"])) < 0.5 or r["one_colour"]}
        for given, listed in (("1", expected_low), ("0", {str(r["request_id"]) for r in made})):  # "1": the dashboard's
            page = client.get("/console/requests", params={"low": given}).text
            assert set(re.findall(r'href="/console/requests/([0-9a-f-]{36})"', page)) == listed, given
        # Pages of two, newest first, follow the "older" link to the end.
        seen, page = [], client.get("/console/requests", params={"limit": "2"}).text
        while True:
            seen += re.findall(r'href="/console/requests/([0-9a-f-]{36})"', page)
            older = re.search(r'id="older" href="([^"]+)"', page)
            if not older:
                break
            page = client.get(older.group(1).replace("&amp;", "&")).text
        assert seen == [str(r["request_id"]) for r in reversed(made)]
        bad = client.get("/console/requests", params={"min_confidence": "high"})
        assert bad.status_code == 400 and "confidence from &#39;high&#39;: a number between 0 and 1" in bad.text
        for cursor in ("99999999999999999999999999", "\u00b2"):  # was an internal error (500)
            beyond = client.get("/console/requests", params={"cursor": cursor})
            assert beyond.status_code == 400 and "next_cursor of the previous page" in beyond.text


def test_request_page_flags_an_image_changed_since_attribution(
    console: tuple[Server, str, list[dict[str, object]], Ingested],
) -> None:
    server, reader, made, _ = console
    record = made[1]
    with signed_in(server, reader) as client:
        page = client.get(f"/console/requests/{record['request_id']}").text
        assert "intact: the stored hash matches the record" in page
        assert page.count("same file as attributed") == 1 + len(record["neighbours"])  # type: ignore[arg-type]
        assert "changed since attribution" not in page
        assert page.count("<svg") >= 2  # the shares' bar chart and the confidence band
        kept = Path(str(record["image"]))
        original = kept.read_bytes()
        try:
            shutil.copyfile(Path(str(made[2]["image"])), kept)  # another image under the attributed one's name
            changed = client.get(f"/console/requests/{record['request_id']}").text
            assert changed.count("changed since attribution") == 1
        finally:
            kept.write_bytes(original)
        missing = client.get("/console/requests/no-such-request")
        assert missing.status_code == 404 and "no attribution request" in missing.text


def test_dashboard_shows_the_log(console: tuple[Server, str, list[dict[str, object]], Ingested]) -> None:
    server, reader, made, _ = console
    with signed_in(server, reader) as client:
        dashboard = client.get("/console/")
        page = dashboard.text
        assert "not verified since the service started" in page
        # no other site may frame the console (a framed button can be clicked through) or load it in a page
        assert "frame-ancestors 'none'" in dashboard.headers["content-security-policy"]
        assert dashboard.headers["x-frame-options"] == "DENY" and dashboard.headers["referrer-policy"] == "no-referrer"
        # Another site's page can make the browser post the form, but cannot read the dashboard's token.
        forged = client.post("/console/verify", data={"csrf": "guess"})
        assert forged.status_code == 403 and client.post("/console/verify").status_code == 403
        assert "not verified since the service started" in client.get("/console/").text
        token = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        assert token is not None
        verified = client.post("/console/verify", data={"csrf": token.group(1)}, follow_redirects=True).text
        assert re.search(rf'id="chain"><span class="ok">OK</span>: {len(made)} records', verified)
        checks = re.search(r'id="checks">(.*?)</td>', verified)  # the models and spaces lines, as audit verify's
        assert checks is not None and checks.group(1).startswith('<span class="ok">models OK: no record was scored')
        assert '<br><span class="ok">spaces OK: no record names a learned space version' in checks.group(1)
        assert re.search(r'id="disagreements">\d+ of \d+ exact-checked', verified)
        for record in made:
            assert str(record["top_artist"]) in verified  # in the timeline's legend


def _posting_sign_in(page: Path, server: Server, key: str, next_: str) -> str:
    """A local page that posts the sign-in form at once (a key is never put in an address), for headless Chromium."""
    fields = "".join(f'<input name="{n}" value="{html.escape(v)}">' for n, v in (("key", key), ("next", next_)))
    page.write_text(
        f'<!DOCTYPE html><form id="f" method="post" action="{server.url}/console/login">{fields}</form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    return page.as_uri()


@pytest.mark.slow
def test_console_pages_render_in_chromium(
    console: tuple[Server, str, list[dict[str, object]], Ingested], tmp_path: Path
) -> None:
    browser = _chromium()
    server, reader, made, _ = console
    artist = str(made[0]["top_artist"])
    pages = {
        "dashboard": "/console/",
        "requests": "/console/requests",
        "filtered": "/console/requests?" + urlencode({"artist": artist}),
        "request": f"/console/requests/{made[0]['request_id']}",
    }
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--no-pdf-header-footer"]
    for name, path in pages.items():
        url = _posting_sign_in(tmp_path / f"{name}-sign-in.html", server, reader, path)  # signs in, then the page
        common = [browser, *flags, "--enable-logging=stderr", "--v=0", "--window-size=1280,1600"]
        common.append("--virtual-time-budget=10000")  # until the sign-in form's post and its redirect have loaded
        dom = subprocess.run(
            [*common, f"--user-data-dir={tmp_path / name}-dom", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        shot = tmp_path / f"{name}.png"
        picture = subprocess.run(
            [*common, f"--user-data-dir={tmp_path / name}-shot", f"--screenshot={shot}", url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert dom.returncode == 0 and picture.returncode == 0, dom.stderr[-2000:] + picture.stderr[-2000:]
        console_lines = [line for line in (dom.stderr + picture.stderr).splitlines() if ":CONSOLE" in line]
        assert not console_lines, f"{name}: {console_lines}"
        assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(b"\x89PNG")
        assert "signed in as officer (reader)" in dom.stdout, f"{name}: {dom.stdout[:500]}"
        if name == "filtered":
            rows = re.findall(r'href="/console/requests/[0-9a-f-]{36}"', dom.stdout)
            assert len(rows) == sum(1 for r in made if artist in r["artist_shares"])  # type: ignore[operator]
        if name == "request":
            assert str(made[0]["record_hash"]) in dom.stdout and "<svg" in dom.stdout
