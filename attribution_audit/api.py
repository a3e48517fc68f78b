"""The Python API: what the CLI and the HTTP service do, for programs (``from attribution_audit import ...``).

Attribute images in a long-lived process (the model loaded and the store opened once), read the log, verify it::

    from attribution_audit import AttributionParams, RequestFilter, Upload, open_service

    with open_service(data_dir=".demo/data") as service:
        [result] = service.attribute([Upload.from_path("generated.png")], AttributionParams(k=5), requester="me")
        print(result.top_artist, result.confidence, result.record_hash)  # returned once committed to the log
        done = service.submit([Upload.from_path("next.png")])  # the same, with done.checkpoint_problem: the automatic
        # checkpoint that failed after the commit (the attributions are logged all the same), or None, and
        # done.notes: in a learned space fitted before some artists were ingested, a SpaceSinceFit note; in one
        # whose own confidence model was fitted at another K, an OwnConfidenceAtOtherK note; done.notes_of(i): the
        # notes of attribution i, a FlatImage note first where its image is one colour throughout
        low = service.attributions(RequestFilter(max_confidence=0.5, limit=20))
        assert service.verify().ok  # the chain and the witness file's last checkpoint, as `audit verify`

One-off use, as the CLI does it (the model loaded for the call)::

    from attribution_audit import attribute_files, load_settings, open_audit

    settings = load_settings(data_dir=".demo/data")
    for result in attribute_files(settings, open_audit(settings), ["a.png", "b.png"], AttributionParams()):
        ...  # an Attribution, or the ImageError that kept that file out of the log (after the first, when K is more
        # than the collection's works, a FewerWorks note; in a learned space fitted before some artists were
        # ingested, a SpaceSinceFit note; in one whose own confidence model was fitted at another K or rule, an
        # OwnConfidenceAtOtherK note; after one of an image of one colour throughout, a FlatImage note; after a
        # record, any automatic checkpoint Signed)

Errors are :mod:`attribution_audit.errors` classes with a one-line message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attribution_audit.config import Settings, load_settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution, Neighbour
from attribution_audit.services.attribute import FewerWorks, OwnConfidenceAtOtherK, attribute_files
from attribution_audit.services.attribution import FlatImage, SpaceSinceFit
from attribution_audit.services.audit_log import (
    browse_attributions,
    get_attribution,
    list_attributions,
    shares_over_time,
)
from attribution_audit.services.checkpoints import Verification, verify_database, write_checkpoint
from attribution_audit.services.keys import create_key, revoke_key
from attribution_audit.services.serving import DEFAULT_MAX_BATCH, Attributed, AttributionService, Upload
from attribution_audit.services.wiring import open_audit
from attribution_audit.store.browse import RequestFilter

__all__ = [
    "Attributed",
    "Attribution",
    "AttributionParams",
    "AttributionService",
    "FewerWorks",
    "FlatImage",
    "Neighbour",
    "OwnConfidenceAtOtherK",
    "RequestFilter",
    "Settings",
    "SpaceSinceFit",
    "Upload",
    "Verification",
    "attribute_files",
    "browse_attributions",
    "create_key",
    "get_attribution",
    "list_attributions",
    "load_settings",
    "open_audit",
    "open_service",
    "revoke_key",
    "shares_over_time",
    "verify_database",
    "write_checkpoint",
]


@contextmanager
def open_service(
    settings: Settings | None = None,
    *,
    data_dir: str | Path | None = None,
    database_url: str | None = None,
    qdrant_url: str | None = None,
    embedder: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Iterator[AttributionService]:
    """The attribution service (what ``serve`` runs) over ``settings``, or over settings read as the CLI reads
    them (these options > environment > the data dir's record > defaults); stopped and closed after."""
    if settings is None:
        settings = load_settings(
            data_dir=Path(data_dir) if data_dir is not None else None,
            database_url=database_url,
            qdrant_url=qdrant_url,
            embedder=embedder,
        )
    with AttributionService.open(settings, max_batch) as service:
        yield service
