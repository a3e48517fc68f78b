"""A value of another type than its column's (an int in a Float column, a float or text in an Integer column, a bool,
a numpy scalar) is logged as the column stores it where that is exact, or refused before anything is written: an
attribution returned as done is always exactly the record the log holds and verifies (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from dbtools import catalogue_with

from attribution_audit.domain.results import Neighbour, Outcome, RequestDraft
from attribution_audit.errors import DatabaseError
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore


def draft(first: dict[str, Any], metrics: dict[str, Any]) -> RequestDraft:
    """A request of two neighbours, the first with the values ``first`` gives, and the metrics ``metrics`` gives
    (confidence; the features of the outcome)."""
    neighbours = [
        Neighbour(1, "w1", "museum", "anna", 0.75, 0.25, 0.5, "anna", 1),
        Neighbour(2, "w2", "museum", "ben", 0.5, 0.5, 0.5, "ben", 2),
    ]
    neighbours[0] = replace(neighbours[0], **first)
    features = {"entropy": 0.5, "nn_distance": 0.25, "margin": 0.125} | metrics.get("features", {})
    outcome = Outcome(neighbours, [], None, None, "v1", features, "anna", 0.5, {"anna": 0.5, "ben": 0.5})
    return RequestDraft(
        "/q.png", "ab" * 32, np.ones(4, dtype=np.float32), None, "t", "x", "x", "edge", "works_x", {}, {}, 2,
        outcome, metrics.get("confidence", 0.9), "default-v1",
    )  # fmt: skip


LOGGED = {  # logged as the column stores them
    "float32": ({"similarity": np.float32(0.7), "share": np.float32(1 / 3)}, {}),
    "negative zero": ({"similarity": -0.0, "distance": -0.0}, {"features": {"margin": -0.0}}),
    "int for float": ({"similarity": 1, "distance": 0, "share": np.int64(1)}, {"confidence": 1}),
    "int64 for int": ({"rank": np.int64(1), "work_version": np.int64(3)}, {}),
}
REFUSED = {  # (the column named in the refusal)
    "float rank": ({"rank": 7.0}, {}, "attribution_neighbours.rank = 7.0"),
    "float version": ({"work_version": 2.0}, {}, "attribution_neighbours.work_version = 2.0"),
    "text version": ({"work_version": "3"}, {}, "attribution_neighbours.work_version = '3'"),
    "bool similarity": ({"similarity": True}, {}, "attribution_neighbours.similarity = True"),
    "numpy bool share": ({"share": np.bool_(True)}, {}, "attribution_neighbours.share = True"),
    "bool version": ({"work_version": False}, {}, "attribution_neighbours.work_version = False"),
    "bool metric": ({}, {"confidence": True}, "attribution_metrics.confidence = True"),
    "text metric": ({}, {"features": {"margin": "0.5"}}, "attribution_metrics.margin = '0.5'"),
    "huge int for float": ({"similarity": 2**53 + 1}, {}, "attribution_neighbours.similarity = 9007199254740993"),
}


@pytest.fixture(autouse=True)
def museum(audit: AuditStore) -> None:
    """The catalogue the requests' neighbours come from (one that it does not hold is refused)."""
    catalogue_with(audit, {"w1": "anna", "w2": "ben"})


@pytest.mark.parametrize("case", list(LOGGED))
def test_a_value_its_column_stores_exactly_is_logged_as_read_back(audit: AuditStore, case: str) -> None:
    first, metrics = LOGGED[case]
    audit.requests.record(draft({}, {}))  # a record before it
    recorded = audit.requests.record(draft(first, metrics))
    assert recorded.intact
    assert recorded == audit.requests.get(recorded.request_id)  # what was returned is what the log holds
    report = chain.verify_chain(audit.engine)
    assert report.ok and report.checked == 2


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_value_its_column_would_convert_is_refused_and_nothing_is_written(audit: AuditStore, case: str) -> None:
    first, metrics, named = REFUSED[case]
    before = audit.requests.record(draft({}, {}))
    with pytest.raises(DatabaseError) as refused:
        audit.requests.record(draft(first, metrics))
    message = str(refused.value)
    assert message.startswith(f"cannot log {named} (a ") and "nothing was recorded" in message
    assert "\n" not in message
    assert [r.id for r in chain.load_requests(audit.engine)] == [before.request_id]  # the log unchanged
    assert chain.verify_chain(audit.engine).ok
    after = audit.requests.record(draft({}, {}))  # and the chain goes on from its head
    assert after.seq == before.seq + 1 and chain.verify_chain(audit.engine).checked == 2
