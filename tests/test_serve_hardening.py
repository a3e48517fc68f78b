"""``serve`` on its own data dir, checkpointing every record: the service's verify verdict is the CLI's (checkpoints
folded in), a checkpoint that fails after a commit does not fail the request, no key in a console address, no
CDN-loaded docs, a health answer that says nothing more than "ok" without a key, and metrics whose
series clients cannot multiply."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Cli, Ingested, ingest_once
from servers import Server, create_key, running_server
from typer.testing import CliRunner

from attribution_audit.domain import checkpoint as statement
from attribution_audit.embedding.base import Embedder
from attribution_audit.services.checkpoints import signing_key
from attribution_audit.sources.synthetic import DemoCatalogue

HEALTH_DETAILS = {"database", "schema", "vector_store", "embedder"}


@dataclass
class Served:
    server: Server
    writer: str
    reader: str
    ingested: Ingested
    env: dict[str, str]  # the server's checkpoint key and witness file
    image: Path

    @property
    def witness(self) -> Path:
        return Path(self.env["ATTRIBUTION_AUDIT_WITNESS_FILE"])

    def attribute(self) -> dict[str, object]:
        with self.server.client(self.writer) as http:
            response = http.post("/v1/attributions", files=[("images", ("q.png", self.image.read_bytes()))])
        assert response.status_code == 200, response.text
        assert "x-checkpoint-problem" not in response.headers
        made: dict[str, object] = response.json()[0]
        return made


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("hardening")
    ingested = ingest_once(root, sqlite_template, demo_catalogue.manifest)
    url = f"sqlite:///{ingested.database}"
    env = {
        "ATTRIBUTION_AUDIT_CHECKPOINT_EVERY": "1",
        "ATTRIBUTION_AUDIT_CHECKPOINT_KEY": str(root / "keys" / "checkpoint.pem"),
        "ATTRIBUTION_AUDIT_WITNESS_FILE": str(root / "witness.jsonl"),
    }
    writer = create_key(ingested.data_dir, url, "image-generator")
    reader = create_key(ingested.data_dir, url, "compliance", role="reader")
    with running_server(ingested.data_dir, url, root / "serve.log", env=env) as server:
        yield Served(server, writer, reader, ingested, env, demo_catalogue.queries[0].path)


def test_verify_answers_the_cli_verdict_with_the_witness_checkpoint_folded_in(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = served.attribute()  # checkpointed at once (every record)
    with served.server.client(served.reader) as http:
        verified = http.get("/v1/audit/verify").json()
        assert verified["ok"] is True and [c["seq"] for c in verified["checkpoints"]] == [made["seq"]]
        # The witness's last checkpoint, signed with the installation's key, says the head had another hash: the
        # chain alone verifies, the log contradicts the checkpoint (records rewritten with recomputed hashes).
        before = served.witness.read_text()
        key, _ = signing_key(Path(served.env["ATTRIBUTION_AUDIT_CHECKPOINT_KEY"]))
        last = statement.parse(json.loads(before.splitlines()[-1]))
        forged = statement.sign(key, last.db_identity, last.seq, "0" * 64, datetime.now(UTC))
        served.witness.write_text(before + forged.line() + "\n")
        try:
            verified = http.get("/v1/audit/verify").json()
            assert verified["ok"] is False and verified["reason"] is None and verified["checked"] == made["seq"]
            assert f"contradicts checkpoint seq {made['seq']}" in verified["problem"]
            for name, value in served.env.items():
                monkeypatch.setenv(name, value)
            cli = Cli(served.ingested.data_dir, f"sqlite:///{served.ingested.database}", CliRunner())
            printed = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
            assert printed == {k: v for k, v in verified.items() if k not in ("verified_at", "checked", "problem")}

            # The console's chain line says so too, not "OK".
            with served.server.client() as browser:
                browser.post("/console/login", data={"key": served.reader})
                dashboard = browser.get("/console/").text
                csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', dashboard)
                assert csrf is not None
                browser.post("/console/verify", data={"csrf": csrf[1]})
                chain = browser.get("/console/").text
                assert re.search(r'id="chain"><span class="bad">FAILS</span>: the log contradicts checkpoint', chain)
                page = browser.get(f"/console/requests/{made['request_id']}").text
                assert 'Chain: <span class="bad">FAILS</span>' in page
        finally:
            served.witness.write_text(before)
        assert http.get("/v1/audit/verify").json()["ok"] is True


def test_a_checkpoint_failing_after_the_commit_answers_the_logged_attribution(served: Served) -> None:
    """The witness file cannot be written (here: a folder in its place): the attribution is committed, so the client
    gets it (a retry would log it twice), with the checkpoint's failure in a header, the log and the metrics."""
    kept = served.witness.with_suffix(".kept")
    shutil.move(served.witness, kept)
    served.witness.mkdir()
    try:
        with served.server.client(served.writer) as http:
            response = http.post("/v1/attributions", files=[("images", ("q.png", served.image.read_bytes()))])
    finally:
        served.witness.rmdir()
        shutil.move(kept, served.witness)
    assert response.status_code == 200, response.text
    [made] = response.json()
    problem = response.headers["x-checkpoint-problem"]
    assert problem.startswith(f"the automatic checkpoint after seq {made['seq']} failed: ") and "\n" not in problem
    with served.server.client(served.reader) as http:
        assert http.get(f"/v1/attributions/{made['request_id']}").json() == made
        assert "attribution_checkpoint_failures 1.0" in http.get("/metrics").text
    assert f"ERROR {problem}; the attributions are logged" in served.server.output()
    served.attribute()  # the witness back: checkpointed again, no problem reported


def test_a_key_in_the_console_address_is_refused_and_not_logged(served: Served) -> None:
    with served.server.client() as browser:
        refused = browser.get("/console/login", params={"key": served.reader})
        assert refused.status_code == 400 and "set-cookie" not in refused.headers
        assert "a key in the address (?key=) is refused" in refused.text and served.reader not in refused.text
        assert browser.get("/console/").status_code == 303  # not signed in
        signed = browser.post("/console/login", data={"key": served.reader})
        assert signed.status_code == 303 and browser.get("/console/").status_code == 200
    assert served.reader not in served.server.output()


def test_no_docs_page_loads_scripts_from_a_cdn(served: Served) -> None:
    with served.server.client() as anonymous:
        assert anonymous.get("/docs").status_code == 404 and anonymous.get("/redoc").status_code == 404
        assert "/v1/attributions" in anonymous.get("/openapi.json").json()["paths"]


def test_health_says_only_ok_without_a_key(served: Served) -> None:
    with served.server.client() as anonymous:
        answer = anonymous.get("/v1/health")
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    with served.server.client(served.reader) as http:
        detailed = http.get("/v1/health").json()
        assert detailed["status"] == "ok" and set(detailed) >= HEALTH_DETAILS
        assert detailed["embedder"] == "efficientnet-lite0"
    with served.server.client("aa_not-a-key") as wrong:
        assert wrong.get("/v1/health").status_code == 401


def test_made_up_http_methods_add_no_metric_series(served: Served) -> None:
    """Any token is a method to the HTTP parser: counted by name, each would add series to every scrape for good."""
    with served.server.client() as anonymous:
        for n in range(3):
            assert anonymous.request(f"MADEUP{n}", "/v1/health").status_code == 405
        metrics = anonymous.get("/metrics").text
    assert "MADEUP" not in metrics
    assert 'attribution_http_requests_total{method="other",route="/v1/health",status="405"} 3.0' in metrics
