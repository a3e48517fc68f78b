"""Named library errors. Each message is one line that names the input and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class AttributionAuditError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class ImageError(AttributionAuditError):
    """An image file cannot be used (missing, empty, corrupt, truncated, too large, not an image)."""


class ManifestError(AttributionAuditError):
    """A catalogue manifest is malformed (missing columns, duplicate ids, bad paths)."""


class EmbedderError(AttributionAuditError):
    """An embedder cannot be built (unknown name, weights absent on an offline machine)."""


class VectorStoreError(AttributionAuditError):
    """The vector store cannot be opened or does not match the embedder (dimension, busy shard)."""


class DamagedShardError(VectorStoreError):
    """The embedded shard's files cannot be read (corrupt or missing metadata or segment files); ``path`` is the
    shard's folder, which ``catalogue check --repair`` sets aside."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class DatabaseError(AttributionAuditError):
    """The audit database is unreachable or refused a write."""


class PermissionDeniedError(DatabaseError):
    """The audit database refused this user a privilege (a read-only role reading a table outside its views)."""


class UnreadableValueError(DatabaseError):
    """A stored value cannot be read (JSON that is not JSON, a number that is not one): a row was changed outside
    attribution-audit. ``problem`` says what the reading raised."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


class ReadOnlyError(DatabaseError):
    """Nothing can be written to the audit database here (it is opened read-only, this user may only read, or its
    disk is full); it can still be read."""


class DiskFullError(ReadOnlyError):
    """The disk of the audit database is full: nothing can be written to it (it can still be read)."""


class SchemaOutOfDateError(DatabaseError):
    """The audit database schema is not at the head revision."""


class SchemaCheckError(DatabaseError):
    """The audit database's views and triggers cannot be compared with what the migrations create."""


class NotFoundError(AttributionAuditError):
    """A requested record (attribution request, work) does not exist."""


class AmbiguousIdError(AttributionAuditError):
    """A shortened id names no one record: several records' ids start with it, or it is too short to."""


class StorageError(AttributionAuditError):
    """A folder of the data dir cannot be written (its permissions, a full disk): the server's fault, not the
    request's."""


class UnsendableValueError(AttributionAuditError):
    """A value given to a query cannot be sent to the database (text with a NUL character, which PostgreSQL refuses):
    a bad input, not a failing or damaged database."""


class OptionError(AttributionAuditError):
    """A request's options do not apply to what it names (a top-artist rule its space cannot apply)."""


class ConflictError(AttributionAuditError):
    """The request contradicts what is recorded (a merge cycle, a changed file under a used name)."""


class TooLargeError(AttributionAuditError):
    """A request asks for more than the service ever allows at once (its images' decoded pixels)."""


class BusyError(AttributionAuditError):
    """The service has no room for the request now; it may be sent again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Recorded(Protocol):
    """A committed attribution, as far as :class:`PartlyRecordedError` reads it (``domain.results.Attribution``)."""

    @property
    def request_id(self) -> str: ...

    def as_json(self) -> dict[str, Any]: ...


class PartlyRecordedError(AttributionAuditError):
    """A request of several images failed after the first of them were recorded (each is committed on its own):
    ``recorded`` holds those (in the log: not to be sent again), ``cause`` why the next one failed."""

    def __init__(self, cause: Exception, recorded: Sequence[Recorded], total: int) -> None:
        ids = ", ".join(a.request_id for a in recorded)
        said = cause if isinstance(cause, AttributionAuditError) else f"internal error ({type(cause).__name__})"
        super().__init__(
            f"{said}; {len(recorded)} of {total} images were attributed and recorded before this error (requests "
            f"{ids}): do not send them again"
        )
        self.cause, self.recorded = cause, recorded
