"""The service's app in process over a migrated audit log on SQLite and PostgreSQL (no model loaded): query and path
parameters holding a control character, and an uploads folder that cannot be written."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import pytest
from conftest import Cli
from fastapi.testclient import TestClient
from PIL import Image

from attribution_audit.config import load_settings
from attribution_audit.errors import StorageError, UnsendableValueError
from attribution_audit.http.api import create_app
from attribution_audit.services.audit_log import get_attribution, resolve_request_id
from attribution_audit.services.serving import AttributionService, Upload
from attribution_audit.store.audit_store import AuditStore


class App:
    def __init__(self, client: TestClient, audit: AuditStore, key: str, service: AttributionService) -> None:
        self.client, self.audit, self.key, self.service = client, audit, key, service
        self.headers = {"Authorization": f"Bearer {key}"}


@pytest.fixture
def app(migrated_url: str, tmp_path: Path) -> Iterator[App]:
    audit = AuditStore.open(migrated_url)
    key = audit.keys.create("image-generator", "writer")
    settings = load_settings(data_dir=tmp_path / "data", database_url=migrated_url)
    # No attributor: these requests are refused before one is needed.
    service = AttributionService(settings, audit, cast(Any, None), tmp_path / "data" / "uploads")
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as client:
            yield App(client, audit, key, service)
    finally:
        audit.close()


def _one_line_error(response: Any, status: int, names: str) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    assert message.startswith(names) and "\n" not in message and "\x00" not in message
    assert "restore" not in message and "changed outside" not in message  # not the corruption message
    return message


@pytest.mark.parametrize("character", ["\x00", "\x1b", "\n", "\x7f", "\x85"])
def test_a_control_character_in_a_parameter_is_refused_alike_on_both_databases(app: App, character: str) -> None:
    # On PostgreSQL a NUL reached psycopg, which refused it: 503 "a row was changed outside attribution-audit; restore
    # the database from a backup"; SQLite answered an empty list.
    bad = quote(f"a{character}b")
    http, headers = app.client, app.headers
    listed = (("artist", "/v1/attributions"), ("cursor", "/v1/attributions"), ("period", "/v1/artists/shares"))
    for name, path in listed:
        _one_line_error(http.get(f"{path}?{name}={bad}", headers=headers), 400, f"{name}:")
    message = _one_line_error(http.get(f"/v1/attributions/{bad}", headers=headers), 404, "request_id:")
    assert "control character" in message
    _one_line_error(http.get(f"/v1/attributions/{bad}"), 404, "request_id:")  # before the key: nothing to look up
    # the console: its request list and request page (signed in, and not)
    signed = http.post("/console/login", data={"key": app.key}, follow_redirects=False)
    assert signed.status_code == 303
    _one_line_error(http.get(f"/console/requests?artist={bad}"), 400, "artist:")
    _one_line_error(http.get(f"/console/requests?since=2024-01-01&until={bad}"), 400, "until:")
    _one_line_error(http.get(f"/console/requests/{bad}"), 404, "request_id:")
    # a key in a console address is never echoed, even refused for a control character
    refused = _one_line_error(http.get(f"/console/login?key=secret{bad}"), 400, "key:")
    assert "secret" not in refused
    # without the character, the same requests answer as before
    assert http.get("/v1/attributions?artist=ab", headers=headers).json()["attributions"] == []
    assert http.get("/v1/attributions/abcdef0123456789", headers=headers).status_code == 404
    assert http.get("/console/requests?artist=ab").status_code == 200


def test_a_nul_given_to_the_cli_or_the_python_api_is_a_one_line_input_error(
    app: App, migrated_url: str, cli_on: Callable[[str], Cli]
) -> None:
    # argv cannot carry a NUL, but the Python API and a CliRunner can: never the corruption message.
    cli = cli_on(migrated_url)
    for args in (("audit", "show", "abcdef01\x00"), ("keys", "revoke", "a\x00b")):
        output = cli(*args, code=1).output.strip()
        assert output.startswith("error: ") and len(output.splitlines()) == 1, output
        assert "restore" not in output and "changed outside" not in output and "retry" not in output
    for call in (lambda: resolve_request_id(app.audit, "abcdef01\x00"), lambda: get_attribution(app.audit, "a\x00")):
        try:
            call()
        except UnsendableValueError as exc:  # PostgreSQL: refused before it is sent
            assert app.audit.dialect == "postgresql" and "NUL" in str(exc)
        except Exception as exc:  # SQLite: no such request
            assert type(exc).__name__ == "NotFoundError", exc


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("migrated_url", ["sqlite"], indirect=True)
def test_an_unwritable_uploads_folder_is_the_servers_fault_and_named(app: App, tmp_path: Path) -> None:
    # It answered 400, blaming the client's image.
    blocker = tmp_path / "data" / "not-a-folder"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the uploads folder should be")
    app.service.uploads = blocker / "uploads"
    response = app.client.post(
        "/v1/attributions", headers=app.headers, files=[("images", ("q.png", _png(), "image/png"))]
    )
    assert response.status_code == 503, response.text
    message = response.json()["error"]
    assert str(blocker / "uploads") in message and "\n" not in message
    with pytest.raises(StorageError) as info:  # the Python API says the same
        app.service.submit([Upload("q.png", _png())], requester="t")
    assert str(blocker / "uploads") in str(info.value)
