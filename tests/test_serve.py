"""``attribution-audit serve``: the real service in a subprocess on a loopback port, over an ingested demo catalogue.
Every endpoint, API keys, bad uploads, concurrent clients, and (slow, PostgreSQL) a database outage."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from PIL import Image
from servers import Server, create_key, large_png, revoke_key, running_server

from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import ARTIST_NAMES, DemoCatalogue, make_demo_catalogue

MAX_UPLOAD_MB = 0.5  # small, so that the tests can exceed it cheaply
MAX_INFLIGHT_PIXELS = 3_000_000  # small too: two images of 1200 x 1200 fit at once, not three


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("serve-ingested"), sqlite_template, demo_catalogue.manifest)


class Service:
    """The running server with a writer key ("image-generator") and a reader key ("compliance")."""

    def __init__(self, server: Server, writer: str, reader: str, database_url: str) -> None:
        self.server, self.writer_key, self.reader_key, self.database_url = server, writer, reader, database_url
        self.writer = server.client(writer)
        self.reader = server.client(reader)
        self.anonymous = server.client()


@pytest.fixture(scope="module")
def service(ingested: Ingested, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = f"sqlite:///{ingested.database}"
    writer = create_key(ingested.data_dir, url, "image-generator")
    reader = create_key(ingested.data_dir, url, "compliance", role="reader")
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    extra = ("--max-upload-mb", str(MAX_UPLOAD_MB))
    env = {"ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS": str(MAX_INFLIGHT_PIXELS)}
    with running_server(ingested.data_dir, url, log, extra, env=env) as server:
        yield Service(server, writer, reader, url)


def files(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]


def attribute(service: Service, *paths: Path, **params: str) -> list[dict[str, object]]:
    response = service.writer.post("/v1/attributions", files=files(*paths), data=params)
    assert response.status_code == 200, response.text
    records: list[dict[str, object]] = response.json()
    return records


def test_attribute_returns_logged_records_with_the_cli_json(
    service: Service, demo_catalogue: DemoCatalogue, ingested: Ingested, cli_on: Callable[[str], Cli]
) -> None:
    cli = cli_on(service.database_url)
    queries = demo_catalogue.queries[:2]
    records = attribute(service, *(q.path for q in queries), k="5", verify="always", shares="similarity", top="nearest")
    assert len(records) == 2
    for record, query in zip(records, queries, strict=True):
        assert record["requester"] == "image-generator"  # the key's name, not $USER
        assert [n["rank"] for n in record["neighbours"]] == [1, 2, 3, 4, 5]  # type: ignore[index]
        assert record["top_artist"] == query.artist  # the demo's generated images are in their artist's style
        assert record["overlap_at_k"] is not None
        assert record["parameters"]["shares"] == "similarity"  # type: ignore[index]
        assert record["parameters"]["top"] == "nearest"  # type: ignore[index]
        # the upload is kept under its digest and the record names it
        kept = Path(str(record["image"]))
        assert kept.parent == (ingested.data_dir / "uploads").resolve() and kept.read_bytes() == query.path.read_bytes()
        # the same object as the CLI prints for the logged record, and as GET returns
        shown = json.loads(cli("audit", "show", str(record["request_id"]), "--format", "json").stdout)
        assert shown == record
        got = service.reader.get(f"/v1/attributions/{record['request_id']}")
        assert got.status_code == 200 and got.json() == record


def test_an_upload_is_kept_under_its_digest_whatever_the_client_named_it(
    service: Service, demo_catalogue: DemoCatalogue
) -> None:
    # The kept file's extension came from the client's filename: escape sequences and bidi overrides reached the
    # data dir, the recorded path and every terminal that lists it.
    data = demo_catalogue.queries[3].path.read_bytes()
    for name, suffix in (("x.\x1b[31m", ""), ("x.\u202egnp", ""), ("../../etc/x.PNG", ".png"), ("x.tar.<b>", "")):
        [record] = service.writer.post("/v1/attributions", files=[("images", (name, data, "image/png"))]).json()
        kept = Path(str(record["image"]))
        assert kept.name == f"{record['image_sha256']}{suffix}" and kept.read_bytes() == data


def test_keys_are_required_and_readers_cannot_attribute(service: Service, demo_catalogue: DemoCatalogue) -> None:
    image = demo_catalogue.queries[0].path
    for client in (service.anonymous, service.server.client("aa_not-a-key")):
        response = client.post("/v1/attributions", files=files(image))
        assert response.status_code == 401 and "keys create" in response.json()["error"]
        assert client.get("/v1/attributions").status_code == 401
    refused = service.reader.post("/v1/attributions", files=files(image))
    assert refused.status_code == 403 and "reader key" in refused.json()["error"]
    assert service.reader.get("/v1/attributions").status_code == 200


def test_a_revoked_key_is_refused_by_the_running_service_like_an_unknown_key(
    service: Service, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    leaked = create_key(ingested.data_dir, service.database_url, "leaked-generator")
    with service.server.client(leaked) as client, service.server.client("aa_not-a-key") as unknown:
        assert client.get("/v1/attributions").status_code == 200
        printed = revoke_key(ingested.data_dir, service.database_url, "leaked-generator")
        assert printed.startswith("revoked key 'leaked-generator' at ") and len(printed.splitlines()) == 1
        upload = files(demo_catalogue.queries[0].path)
        for refused, never in (
            (client.get("/v1/attributions"), unknown.get("/v1/attributions")),
            (client.post("/v1/attributions", files=upload), unknown.post("/v1/attributions", files=upload)),
        ):
            assert refused.status_code == never.status_code == 401
            assert refused.content == never.content  # no oracle: a revoked key reads as one never created
    assert service.writer.get("/v1/attributions").status_code == 200  # the other keys stay valid


def test_bad_uploads_get_one_line_errors_and_nothing_is_logged(
    service: Service, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    before = service.reader.get("/v1/audit/verify").json()["checked"]
    good = demo_catalogue.queries[0].path
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [
        (files(good, text), 400, "notes.png: not a recognised image format"),
        ([("images", ("empty.png", b"", "image/png"))], 400, "empty.png: file is empty"),
        ([("images", ("big.png", b"\x89PNG" + b"0" * 600_000, "image/png"))], 413, "big.png: upload is over"),
        ([*files(good), ("images", ("truncated.png", good.read_bytes()[:300], "image/png"))], 400, "truncated.png"),
        # a part without a filename is text to the server: its bytes were quoted back (a 255 kB error for the demo)
        ([("images", ("", good.read_bytes(), "image/png"))], 400, "images: send each image as a file part"),
    ]
    for upload, status, message in cases:
        response = service.writer.post("/v1/attributions", files=upload)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error.startswith(message) and "\n" not in error and "Traceback" not in error
        assert len(error) < 300, error[:300]
    params = [
        ({"k": "0"}, 400, "k must be between"),
        ({"space": "colour"}, 404, "no learned space colour"),  # a name that is no space and no learned space
        ({"top": "median"}, 400, "top must be one of share, nearest, centroid"),
        ({"top": "centroid"}, 400, "top rule centroid needs a learned space's artist centroids and space content"),
        ({"k": "x"}, 400, "k 'x'"),
        ({"k": "9" * 5000}, 400, "k '" + "9" * 80 + "': "),  # quoted, but not all of it
    ]
    for data, status, message in params:
        response = service.writer.post("/v1/attributions", files=files(good), data=data)
        assert response.status_code == status and message in response.json()["error"], response.text
    missing = service.writer.post("/v1/attributions", data={"k": "3"})
    assert missing.status_code == 400 and "images" in missing.json()["error"]
    # A body over the request limit (4 x the image limit) is refused before it is parsed: by its declared length, or
    # while it streams (chunked, no length).
    head = b'--b\r\nContent-Disposition: form-data; name="images"; filename="huge.png"\r\n\r\n'
    body = head + b"x" * int(4.2 * MAX_UPLOAD_MB * 1024 * 1024) + b"\r\n--b--\r\n"
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    declared = service.writer.post("/v1/attributions", content=body, headers=multipart)
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
    streamed = service.writer.post("/v1/attributions", content=chunks, headers=multipart)
    for response in (declared, streamed):
        assert response.status_code == 413 and "byte limit" in response.json()["error"], response.text
    assert service.reader.get("/v1/audit/verify").json()["checked"] == before  # none of them was attributed


def test_an_upload_of_one_colour_carries_the_note_that_its_neighbours_share_only_its_colour(
    service: Service, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """As `attribute` notes it: the flat image's result only, in the answer to its request and in its record's."""
    black = tmp_path / "black.png"
    Image.new("RGB", (300, 200)).save(black)
    flat, other = attribute(service, black, demo_catalogue.queries[0].path)
    assert flat["notes"] == [
        f"{flat['image']} is one colour throughout the part attributed: a blocked or blank output? The works nearest "
        "it share only that colour, and its confidence is no evidence of likeness"
    ]
    assert other["notes"] == [] and (flat["one_colour"], other["one_colour"]) == (True, False)
    assert service.reader.get(f"/v1/attributions/{flat['request_id']}").json()["notes"] == flat["notes"]
    everything = service.reader.get("/v1/attributions", params={"limit": 500}).json()["attributions"]
    low = service.reader.get("/v1/attributions", params={"limit": 500, "low_confidence": "true"}).json()
    expected = [a["request_id"] for a in everything if a["confidence"] < 0.5 or a["one_colour"]]
    assert [a["request_id"] for a in low["attributions"]] == expected and flat["request_id"] in expected


def test_reading_endpoints(service: Service, demo_catalogue: DemoCatalogue) -> None:
    made = attribute(service, *(q.path for q in demo_catalogue.queries), k="3")
    artist = demo_catalogue.queries[1].artist
    listed = service.reader.get("/v1/attributions", params={"artist": artist, "limit": 500}).json()
    assert {made[1]["request_id"]} <= {a["request_id"] for a in listed["attributions"]}
    assert all(artist in a["artist_shares"] for a in listed["attributions"])

    # Paging: newest first, pages of two joined by next_cursor are the whole list.
    everything = service.reader.get("/v1/attributions", params={"limit": 500}).json()["attributions"]
    seqs = [a["seq"] for a in everything]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 6
    paged, cursor = [], None
    while True:
        page = service.reader.get("/v1/attributions", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        paged += [a["seq"] for a in page.json()["attributions"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == seqs

    confidences = [a["confidence"] for a in everything]
    middle = sorted(confidences)[len(confidences) // 2]
    high = service.reader.get("/v1/attributions", params={"min_confidence": middle, "limit": 500}).json()
    assert sorted(a["confidence"] for a in high["attributions"]) == sorted(c for c in confidences if c >= middle)
    low = service.reader.get("/v1/attributions", params={"max_confidence": middle, "limit": 500}).json()
    assert all(a["confidence"] <= middle for a in low["attributions"])
    for bad in ("nan", "5"):  # refused, not an empty page that reads as "no such attribution"
        refused = service.reader.get("/v1/attributions", params={"min_confidence": bad})
        assert refused.status_code == 400 and "min_confidence" in refused.json()["error"], refused.text
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert service.reader.get("/v1/attributions", params={"since": tomorrow}).json()["attributions"] == []
    assert len(
        service.reader.get("/v1/attributions", params={"until": tomorrow, "limit": 500}).json()["attributions"]
    ) == len(seqs)
    bad = service.reader.get("/v1/attributions", params={"since": "last week"})
    assert bad.status_code == 400 and "since 'last week'" in bad.json()["error"]
    for cursor in ("-5", "1e3", "99999999999999999999999999", "\u00b2"):  # out of a 64-bit seq, a digit int() refuses
        wrong_cursor = service.reader.get("/v1/attributions", params={"cursor": cursor})
        assert wrong_cursor.status_code == 400 and "next_cursor of the previous page" in wrong_cursor.json()["error"]

    for period, width in (("day", 10), ("month", 7)):
        shares = service.reader.get("/v1/artists/shares", params={"period": period}).json()["shares"]
        assert {row["artist"] for row in shares} >= {a for r in made for a in r["artist_shares"]}  # type: ignore[attr-defined]
        assert all(len(row["period"]) == width for row in shares)
    wrong = service.reader.get("/v1/artists/shares", params={"period": "week"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "period 'week': choose day or month"

    missing = service.reader.get("/v1/attributions/no-such-id")
    assert missing.status_code == 404 and "audit list" in missing.json()["error"]
    verified = service.reader.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["checked"] == len(seqs)

    health = service.reader.get("/v1/health").json()
    assert health["status"] == "ok" and health["embedder"] == "efficientnet-lite0"
    assert health["vector_store"].startswith("qdrant-edge:")
    schema = service.anonymous.get("/openapi.json").json()
    assert {"/v1/attributions", "/v1/attributions/{request_id}", "/v1/artists/shares", "/v1/audit/verify"} <= set(
        schema["paths"]
    )
    metrics = service.anonymous.get("/metrics").text
    assert 'attribution_http_requests_total{method="POST",route="/v1/attributions",status="200"}' in metrics
    assert 'attribution_http_request_seconds_bucket{le="0.005",method="GET",route="/v1/attributions"}' in metrics
    assert "attribution_queue_images 0.0" in metrics


def test_concurrent_clients_are_all_logged_on_one_linear_chain(service: Service, demo_catalogue: DemoCatalogue) -> None:
    before = service.reader.get("/v1/audit/verify").json()["checked"]
    paths = [q.path for q in demo_catalogue.queries]
    results: list[dict[str, object]] = []
    failures: list[str] = []

    def client(index: int) -> None:
        with service.server.client(service.writer_key) as http:
            for round_ in range(3):
                chosen = paths[(index + round_) % len(paths)]
                response = http.post("/v1/attributions", files=files(chosen), data={"k": "3"})
                if response.status_code == 200:
                    results.extend(response.json())
                else:
                    failures.append(response.text)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(results) == 24
    for record in results:  # every result returned is the logged record
        assert service.reader.get(f"/v1/attributions/{record['request_id']}").json() == record
    verified = service.reader.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["checked"] == before + 24
    seqs = sorted(int(str(r["seq"])) for r in results)
    assert len(set(seqs)) == 24


@pytest.mark.slow
@pytest.mark.postgres
def test_a_database_outage_gives_503_and_nothing_unlogged(
    postgres_url: str,
    postgres_admin: object,
    demo_catalogue: DemoCatalogue,
    tmp_path: Path,
    cli_on: Callable[[str], Cli],
    embedder: Embedder,
) -> None:
    from sqlalchemy import Engine, text
    from sqlalchemy.engine import make_url

    cli = cli_on(postgres_url)
    cli("db", "upgrade")
    cli("ingest", str(demo_catalogue.manifest), "--embedder", "efficientnet-lite0")
    writer = create_key(cli.data_dir, postgres_url, "image-generator")
    name = make_url(postgres_url).database
    admin: Engine = postgres_admin  # type: ignore[assignment]
    image = demo_catalogue.queries[0].path

    with running_server(cli.data_dir, postgres_url, tmp_path / "serve.log") as server, server.client(writer) as http:
        before = http.post("/v1/attributions", files=files(image))
        assert before.status_code == 200
        with admin.connect() as connection:  # the database goes away: no new connection, the open ones cut
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
        try:
            for _ in range(3):
                down = http.post("/v1/attributions", files=files(image))
                assert down.status_code == 503, down.text
                assert "audit database" in down.json()["error"] and "\n" not in down.json()["error"]
            health = http.get("/v1/health")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        after = http.post("/v1/attributions", files=files(image))
        assert after.status_code == 200, after.text
        verified = http.get("/v1/audit/verify").json()
        # Only the two answered requests are in the log, chained; the refused ones left nothing behind.
        assert verified["ok"] is True and verified["checked"] == 2
        assert after.json()[0]["seq"] == before.json()[0]["seq"] + 1
    logged = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert "Traceback" not in logged and "error ignored" not in logged, logged  # the outage's own lines only


def test_a_second_service_on_the_same_embedded_shard_is_refused_at_start(service: Service, ingested: Ingested) -> None:
    """The running service holds the shard from its start: a second one on the data dir stops with one line (it
    used to announce itself and answer health checks, then make every attribution wait 120 s for the lock)."""
    import subprocess

    from servers import cli_command, free_port

    done = subprocess.run(
        cli_command(ingested.data_dir, service.database_url, "serve", "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1 and "busy in another process" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and service.anonymous.get("/v1/health").status_code == 200


def test_serve_refuses_a_missing_audit_log(tmp_path: Path) -> None:
    """Start-up faults are one-line errors, as in every command."""
    import subprocess

    from servers import cli_command

    done = subprocess.run(
        cli_command(tmp_path / "nothing", f"sqlite:///{tmp_path / 'nothing' / 'audit.sqlite'}", "serve", "--port", "1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_keys_revoke_keeps_the_name_and_lists_when(cli_on: Callable[[str], Cli], migrated_url: str) -> None:
    cli = cli_on(migrated_url)
    cli("keys", "create", "generator-1")
    cli("keys", "create", "officer", "--role", "reader")
    done = cli("keys", "revoke", "generator-1").stdout.splitlines()
    assert len(done) == 1 and done[0].startswith("revoked key 'generator-1' at ")
    listed = {k["name"]: k for k in json.loads(cli("keys", "list", "--format", "json").stdout)}
    revoked_at = listed["generator-1"]["revoked_at"]
    assert revoked_at is not None and revoked_at in done[0] and listed["officer"]["revoked_at"] is None
    assert "revoked_at" in cli("keys", "list").stdout.splitlines()[0]
    assert "name,role,created_at,revoked_at" in cli("keys", "list", "--format", "csv").stdout
    for args, expected in (
        (("keys", "revoke", "generator-1"), "was revoked already"),
        (("keys", "revoke", "nobody"), "no API key named 'nobody'; see the names with `attribution-audit keys list`"),
        (("keys", "create", "generator-1"), "was revoked; its name stays the requester of its past attributions"),
        (("keys", "create", "GENERATOR-1"), "was revoked ('generator-1': the same name to a reader)"),
        (("keys", "create", "g\u0435nerator-1"), "was revoked ('generator-1': the same name to a reader)"),
        (("keys", "create", "Officer"), "exists already ('officer': the same name to a reader)"),
    ):
        refused = cli(*args, code=1)
        assert refused.stderr.startswith("error: ") and expected in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    assert [k["name"] for k in json.loads(cli("keys", "list", "--format", "json").stdout)] == ["generator-1", "officer"]


def test_keys_create_prints_the_key_alone_on_the_last_line(cli: Cli) -> None:
    printed = cli("keys", "create", "generator-1").stdout.splitlines()
    key = printed[-1]
    assert key.startswith("aa_") and " " not in key and len(key) > 40
    assert key not in cli("keys", "list", "--format", "json").stdout  # only its hash is stored
    listed = json.loads(cli("keys", "list", "--format", "json").stdout)
    assert [(k["name"], k["role"]) for k in listed] == [("generator-1", "writer")]
    again = cli("keys", "create", "generator-1", code=1)
    assert "exists already" in again.output
    assert "role 'admin'" in cli("keys", "create", "x", "--role", "admin", code=2).output
    engine = cli.engine()
    try:
        with engine.connect() as connection:
            from sqlalchemy import text

            stored = connection.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
    finally:
        engine.dispose()
    import hashlib

    assert stored == [hashlib.sha256(key.encode()).hexdigest()]


def corrupt_png(side: int) -> bytes:
    """A PNG whose header says ``side`` x ``side`` and whose pixel data is damaged (its IDAT chunk garbled)."""
    data = bytearray(large_png(side))
    start = data.index(b"IDAT") + 4
    data[start + 8 : start + 64] = bytes(56)
    length = int.from_bytes(data[start - 8 : start - 4], "big")  # keep the CRC right: the damage is in the data
    data[start + length : start + length + 4] = zlib.crc32(bytes(data[start - 4 : start + length])).to_bytes(4, "big")
    return bytes(data)


def inflight_pixels(service: Service, metric: str = "attribution_inflight_pixels") -> float:
    """The decoded pixels the service holds now (or another of its gauges), from /metrics."""
    text = service.anonymous.get("/metrics").text
    [line] = [x for x in text.splitlines() if x.startswith(f"{metric} ")]
    return float(line.split()[1])


def test_a_request_over_the_pixel_budget_is_refused_before_decoding_and_not_logged(service: Service) -> None:
    # Small uploads of large images: 2 x 1500 x 1500 are 4.5 Mpx, over the 3 Mpx budget (a 200 kB PNG of
    # 8000 x 8000 decoded to 256 MB; 64 of them fitted in one request).
    before = service.reader.get("/v1/audit/verify").json()["checked"]
    two = [("images", (f"wide{i}.png", large_png(1500, i), "image/png")) for i in range(2)]
    # a header that claims 2000 x 2000 with damaged data: refused by its header's pixels, never decoded
    claimed = [("images", ("claims.png", corrupt_png(2000), "image/png"))]
    for upload, message in (
        (two, "2 images of 4,500,000 pixels in all"),
        (claimed, "1 image of 4,000,000 pixels in all"),
    ):
        response = service.writer.post("/v1/attributions", files=upload)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error.startswith(message) and "\n" not in error
        assert "3,000,000 decoded pixels a request (ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS)" in error
        assert "send fewer images a request, or scale them down" in error
    assert service.reader.get("/v1/audit/verify").json()["checked"] == before
    assert inflight_pixels(service) == 0


def test_a_corrupt_image_gives_back_its_pixels(service: Service) -> None:
    response = service.writer.post("/v1/attributions", files=[("images", ("bad.png", corrupt_png(1200), "image/png"))])
    assert response.status_code == 400 and response.json()["error"].startswith("bad.png: corrupt image data")
    assert inflight_pixels(service) == 0
    # the whole budget is free again: a request that needs nearly all of it is served at once
    whole = service.writer.post("/v1/attributions", files=[("images", ("whole.png", large_png(1700), "image/png"))])
    assert whole.status_code == 200, whole.text
    assert inflight_pixels(service) == 0


def test_concurrent_requests_under_the_pixel_budget_all_succeed_and_give_it_back(service: Service) -> None:
    # 6 requests of 1.44 Mpx each against a 3 Mpx budget: two at a time are decoded, the others wait their turn.
    uploads = [large_png(1200, seed) for seed in range(6)]
    answers: list[int] = []

    def post(data: bytes) -> None:
        with service.server.client(service.writer_key) as http:
            answers.append(
                http.post("/v1/attributions", files=[("images", ("big.png", data, "image/png"))]).status_code
            )

    threads = [threading.Thread(target=post, args=(data,)) for data in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 6
    assert inflight_pixels(service) == 0
    assert inflight_pixels(service, "attribution_inflight_pixels_limit") == MAX_INFLIGHT_PIXELS


def test_an_attribution_in_a_space_fitted_before_an_artist_was_ingested_carries_the_note(
    cli: Cli, tmp_path: Path
) -> None:
    """`attribute` notes that the artists ingested since a learned space's fit have no centroid there; the service's
    answer and the console's page of such a request said nothing of it. The service's answers (POST and GET) always
    carry `notes`, and POST also the note that the space's own confidence model was fitted at another K, as
    `attribute` prints it."""
    four = make_demo_catalogue(tmp_path / "four", artists=4, works_per_artist=6)
    five = make_demo_catalogue(tmp_path / "five", artists=5, works_per_artist=6)
    cli("ingest", str(four.manifest), "--embedder", EMBEDDER, "--catalogue", "demo")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "content", "--embedder", EMBEDDER)
    cli("ingest", str(five.manifest), "--embedder", EMBEDDER, "--catalogue", "demo")
    note = (
        f"space painters (version 1) was fitted before 1 artist(s) were ingested ({ARTIST_NAMES[4]}): they have no "
        "centroid; refit it with `attribution-audit spaces fit painters --from content` to include them"
    )
    own = json.loads(cli("spaces", "list", "--json").stdout)[0]["validation"]["confidence"]["model"]
    at_other_k = (
        f"space painters (version 1)'s own confidence model {own} was fitted at K = 10 under --top share, not these "
        "requests' K = 5 under --top share: their confidence is the default formula's (default-v1, recorded as their "
        "confidence model); `attribution-audit spaces fit painters --from content --k 5` fits one at K = 5, or "
        "`attribution-audit calibrate LABELLED.csv --space painters --k 5` on labelled queries"
    )
    under_centroid = (  # the own model, fitted under share, does not score the centroid rule's requests either
        f"space painters (version 1)'s own confidence model {own} was fitted at K = 10 under --top share, not these "
        "requests' K = 10 under --top centroid: their confidence is the default formula's (default-centroid-v1, "
        "recorded as their confidence model); `attribution-audit calibrate LABELLED.csv --space painters --k 10 --top "
        "centroid` fits one for --top centroid (spaces fit fits only --top share) on labelled queries"
    )
    writer = create_key(cli.data_dir, cli.database_url, "image-generator")
    queries = (five.queries[4].path, five.queries[0].path)
    with running_server(cli.data_dir, cli.database_url, tmp_path / "serve.log") as server:
        with server.client(writer) as http:
            learned = http.post(
                "/v1/attributions", files=files(*queries), data={"space": "painters", "top": "centroid"}
            )
            assert learned.status_code == 200, learned.text
            assert [record["notes"] for record in learned.json()] == [[note, under_centroid]] * 2
            [plain] = http.post("/v1/attributions", files=files(queries[0])).json()
            assert plain["notes"] == []  # the content space has no centroids to miss
            # the learned space's requests embed their corner crops too (the service's batches as `attribute`)
            assert [type(r["crop_log_odds"]) for r in learned.json()] == [float, float]
            assert plain["crop_log_odds"] is None
            for record in (*learned.json(), plain):  # GET: the record's notes (the own model's is POST's only)
                notes = [n for n in record["notes"] if n != under_centroid]
                assert http.get(f"/v1/attributions/{record['request_id']}").json() == {**record, "notes": notes}
            at_five = http.post("/v1/attributions", files=files(queries[0]), data={"space": "painters", "k": "5"})
            assert at_five.json()[0]["notes"] == [note, at_other_k]  # as `attribute` prints them
        with server.client() as browser:
            browser.post("/console/login", data={"key": writer, "next": "/console/"})
            page = browser.get(f"/console/requests/{learned.json()[0]['request_id']}")
            assert page.status_code == 200 and f"<strong>Note</strong>: {note}</p>" in page.text
            assert "<strong>Note</strong>" not in browser.get(f"/console/requests/{plain['request_id']}").text
