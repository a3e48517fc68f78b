"""The ``attribute`` use case: attribute image files one by one, each returned only once it is in the audit log,
with the automatic checkpoints of the chain written on the way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import ImageError
from attribution_audit.services.attribution import SpaceSinceFit
from attribution_audit.services.checkpoints import Signed, auto_checkpoint, guard_witness, refuse_unsignable
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore


@dataclass(frozen=True)
class FewerWorks:
    """K asked for more works than the collection holds: each attribution ranks its ``works`` (fewer with
    ``max_distance``); the records keep the ``k`` asked, beside the neighbours they hold."""

    k: int
    works: int
    collection: str
    max_distance: float | None

    def __str__(self) -> str:
        returned = f"K = {self.works} were" if self.max_distance is None else f"at most {self.works} are"
        return (
            f"--k {self.k}, but collection '{self.collection}' holds only {self.works} works, so {returned} returned "
            f"(the record keeps the k asked, {self.k})"
        )


def attribute_files(
    settings: Settings, audit: AuditStore, images: Sequence[Path], params: AttributionParams
) -> Iterator[Attribution | ImageError | Signed | FewerWorks | SpaceSinceFit]:
    """Each image's committed attribution, or the ImageError that kept it out of the log (the others go on), and
    each checkpoint signed meanwhile; before the first attribution, when K is more than the collection's works, a
    FewerWorks note, and in a learned space fitted before some of the works' artists were ingested, a SpaceSinceFit
    note. Refused up front when the witness file names another audit DB, or when an automatic checkpoint
    falls due among them without the key of the witnessed checkpoints."""
    adopted = guard_witness(settings, audit)
    if adopted is not None:
        yield adopted
    refuse_unsignable(settings, audit, len(images))
    with open_attributor(settings, audit, settings.embedder) as attributor:
        works = attributor.store.count()
        noted = False
        for image in images:
            try:
                attribution = attributor.attribute(image, params)
            except ImageError as exc:
                yield exc
                continue
            if not noted:
                noted = True
                if works < params.k:
                    yield FewerWorks(params.k, works, attributor.store.collection, params.max_distance)
                note = SpaceSinceFit.of(attributor.space_of(params)[0])
                if note is not None:
                    yield note
            yield attribution
            signed = auto_checkpoint(settings, audit, attribution)
            if signed is not None:
                yield signed
