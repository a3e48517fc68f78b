"""The ``attribute`` use case: attribute image files one by one, each returned only once it is in the audit log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import ImageError
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore


def attribute_files(
    settings: Settings, audit: AuditStore, images: Sequence[Path], params: AttributionParams
) -> Iterator[Attribution | ImageError]:
    """Each image's committed attribution, or the ImageError that kept it out of the log (the others go on)."""
    with open_attributor(settings, audit, settings.embedder) as attributor:
        for image in images:
            try:
                yield attributor.attribute(image, params)
            except ImageError as exc:
                yield exc
