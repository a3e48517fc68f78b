"""The HTTP status of each library error (the API answers it with the one-line message as JSON)."""

from __future__ import annotations

from attribution_audit.errors import (
    AttributionAuditError,
    BusyError,
    ConflictError,
    DatabaseError,
    EmbedderError,
    ImageError,
    NotFoundError,
    StorageError,
    TooLargeError,
    VectorStoreError,
)

_STATUS: tuple[tuple[type[AttributionAuditError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (VectorStoreError, 409),  # the collection is not ready for this request (a partly covered space)
    (TooLargeError, 413),
    (BusyError, 503),
    (DatabaseError, 503),
    (EmbedderError, 503),
    (StorageError, 503),  # the service's own folders (uploads): not the client's fault
    (ImageError, 400),
)


def status_of(exc: AttributionAuditError) -> int:
    """404, 409, 413, 503 or 400 (bad input, the default)."""
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 400)
