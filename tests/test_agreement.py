"""Agreement between spaces: each request in a shard that holds both base spaces records the share of the other
base space's K nearest works that are its top artist's; the hash covers it when set, older records keep theirs."""

from __future__ import annotations

import json

import pytest
from conftest import EMBEDDER, Cli

from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.chain import StoredRequest, canonical_content


def test_agreement_is_hashed_only_when_set() -> None:
    metrics = {"entropy": 0.0, "confidence": 0.5, "confidence_model": "default-v1"}
    columns = {"id": "r", "record_hash": "h", "seq": 1}
    before = canonical_content(StoredRequest(columns, [], [], metrics))  # a record written before revision 0012
    assert canonical_content(StoredRequest(columns, [], [], {**metrics, "agreement": None})) == before
    agreed = canonical_content(StoredRequest(columns, [], [], {**metrics, "agreement": 0.3}))
    assert agreed["metrics"] == {**before["metrics"], "agreement": 0.3}
    unset = {**metrics, "agreement": 0.3, "agreement_spaces": None}  # a record written before revision 0013
    assert canonical_content(StoredRequest(columns, [], [], unset)) == agreed
    spaces = canonical_content(StoredRequest(columns, [], [], {**unset, "agreement_spaces": 0.75}))
    assert spaces["metrics"] == {**agreed["metrics"], "agreement_spaces": 0.75}


@pytest.mark.slow
def test_agreement_is_the_other_spaces_share_of_the_top_artist(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    image = str(demo_catalogue.queries[2].path)
    cli("ingest", str(demo_catalogue.manifest), *embedder)  # content only: nothing to agree with
    (alone,) = json.loads(cli("attribute", image, "--json", *embedder).stdout)
    assert alone["agreement"] is None

    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    for space, other in (("content", "style"), ("style", "content"), ("fused", "content")):
        (asked,) = json.loads(cli("attribute", image, "--space", space, "--k", "8", "--json", *embedder).stdout)
        (seen,) = json.loads(cli("attribute", image, "--space", other, "--k", "8", "--json", *embedder).stdout)
        top = asked["top_artist"]
        expected = sum(n["canonical_artist"] == top for n in seen["neighbours"]) / len(seen["neighbours"])
        assert asked["agreement"] == pytest.approx(expected), space
    shown = cli("audit", "show", asked["request_id"]).stdout
    assert f"agreement between spaces {asked['agreement']:.3f}" in shown
    replay = json.loads(cli("audit", "replay", asked["request_id"], "--json").stdout)
    assert replay["replay"]["agreement"] == pytest.approx(asked["agreement"])
    assert "chain OK" in cli("audit", "verify").stdout


@pytest.mark.slow
def test_agreement_of_spaces_is_the_share_of_the_other_spaces_with_the_top_artist(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    embedder = ["--embedder", EMBEDDER]
    image = str(demo_catalogue.queries[2].path)
    cli("ingest", str(demo_catalogue.manifest), *embedder)  # content only, no learned space: no other space
    (alone,) = json.loads(cli("attribute", image, "--json", *embedder).stdout)
    assert alone["agreement_spaces"] is None
    unknown = cli("attribute", image, "--space", "nothing", *embedder, code=1)  # what this collection can fit from
    assert "fit one with `attribution-audit spaces fit nothing --from content`" in unknown.stderr

    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    asked = {
        space: json.loads(cli("attribute", image, "--space", space, "--json", *embedder).stdout)[0]
        for space in ("content", "style", "fused", "painters")
    }
    for space, request in asked.items():
        others = [other["top_artist"] for name, other in asked.items() if name != space]
        assert request["agreement_spaces"] == pytest.approx(others.count(request["top_artist"]) / 3), space
    shown = cli("audit", "show", asked["content"]["request_id"]).stdout
    assert f"agreement of spaces {asked['content']['agreement_spaces']:.3f}" in shown
    assert "chain OK" in cli("audit", "verify").stdout
