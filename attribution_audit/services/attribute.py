"""The ``attribute`` use case: attribute image files one by one, each returned only once it is in the audit log,
with the automatic checkpoints of the chain written on the way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import ImageError
from attribution_audit.services.checkpoints import Signed, auto_checkpoint, guard_witness, refuse_unsignable
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore


def attribute_files(
    settings: Settings, audit: AuditStore, images: Sequence[Path], params: AttributionParams
) -> Iterator[Attribution | ImageError | Signed]:
    """Each image's committed attribution, or the ImageError that kept it out of the log (the others go on), and
    each checkpoint signed meanwhile. Refused up front when the witness file names another audit DB, or when an
    automatic checkpoint falls due among them without the key of the witnessed checkpoints."""
    adopted = guard_witness(settings, audit)
    if adopted is not None:
        yield adopted
    refuse_unsignable(settings, audit, len(images))
    with open_attributor(settings, audit, settings.embedder) as attributor:
        for image in images:
            try:
                attribution = attributor.attribute(image, params)
            except ImageError as exc:
                yield exc
                continue
            yield attribution
            signed = auto_checkpoint(settings, audit, attribution)
            if signed is not None:
                yield signed
