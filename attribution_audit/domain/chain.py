"""The hash chain's pure part: canonical JSON, the link hash, and what verifying or exporting a chain yields.

Each request's ``record_hash`` is ``sha256(prev_hash || canonical JSON of its content)``; the first record links to
:data:`GENESIS_HASH`. The same function verifies an export offline, without the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """The canonical JSON text of a value: sorted keys, no whitespace, non-ASCII kept, floats in Python's shortest
    round-trip form; ``default`` turns other values (times, bytes) into JSON ones."""
    return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default).encode


_CANONICAL = canonical_encoder()


def canonical_json(content: dict[str, Any]) -> bytes:
    """The canonical JSON of ``content`` (see :func:`canonical_encoder`), UTF-8."""
    return _CANONICAL(content).encode()


def hash_content(prev_hash: str, content: dict[str, Any]) -> str:
    """sha256(prev_hash || canonical JSON of the content): the chain link, also used to verify exports offline."""
    return link_hash(prev_hash, canonical_json(content))


def link_hash(prev_hash: str, canonical: bytes) -> str:
    """sha256(prev_hash || canonical): the chain link of a record's canonical JSON bytes."""
    digest = hashlib.sha256(prev_hash.encode())
    digest.update(canonical)
    return digest.hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_chain`: ``ok``, how many rows were checked, the head hash, the first problem."""

    ok: bool
    checked: int
    head_hash: str
    broken_request_id: str | None = None
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def located(self) -> str:
        """Where the chain breaks, as `` at seq N (request ID)``; empty when no record is to blame (records missing
        after those verified, or rows outside the chain)."""
        if self.broken_seq is None:
            return ""
        return f" at seq {self.broken_seq} (request {self.broken_request_id})"


@dataclass(frozen=True)
class ChainRecord:
    """One link of the chain as exported: position, hashes, time, exactly what the hash covers (its canonical JSON:
    the bytes hashed; empty where only the verdict was asked for) and whether its own hash covers them, after its
    prev_hash (computed where the bytes were made: :meth:`of`)."""

    seq: int
    request_id: str
    prev_hash: str
    record_hash: str
    created_at: datetime
    canonical: bytes
    intact: bool

    @classmethod
    def of(
        cls,
        seq: int,
        request_id: str,
        prev_hash: str,
        record_hash: str,
        created_at: datetime,
        canonical: bytes,
        keep: bool = True,
    ) -> ChainRecord:
        """The record, its hash checked; its bytes kept only if ``keep``. (A prev_hash that is not a string, written
        by hand, breaks the link before the hash is looked at.)"""
        intact = isinstance(prev_hash, str) and link_hash(prev_hash, canonical) == record_hash
        return cls(seq, request_id, prev_hash, record_hash, created_at, canonical if keep else b"", intact)


class UnreadableRecord(Exception):
    """A record of the chain cannot be read or hashed: ``seq`` and ``request_id`` name it, ``reason`` says which
    value and why (the message adds what to do)."""

    def __init__(self, message: str, seq: int, request_id: str, reason: str) -> None:
        super().__init__(message)
        self.seq, self.request_id, self.reason = seq, request_id, reason

    def __reduce__(self) -> tuple[type[UnreadableRecord], tuple[str, int, str, str]]:
        """Pickled whole (a process reading the log hands it to the one checking it)."""
        return type(self), (str(self), self.seq, self.request_id, self.reason)


class ChainCheck:
    """Verifies a chain link by link in seq order, in constant memory: each record must follow the previous one
    (seq + 1), link to its hash, and match its own hash. Start from a verified head to check only what follows it."""

    def __init__(self, head_seq: int = 0, head_hash: str = GENESIS_HASH) -> None:
        self.checked, self.prev = head_seq, head_hash
        self.broken: ChainReport | None = None

    def add(self, record: ChainRecord) -> bool:
        """Check the next record; False (and :attr:`broken` set) at the first that does not fit. Its link to the
        previous one is its prev_hash, so its own hash, computed after that prev_hash (:attr:`ChainRecord.intact`),
        is the one computed after the previous record's."""
        problem = self._gap(record.seq)
        if problem is None and record.prev_hash != self.prev:
            problem = "prev_hash does not match the previous record's hash (a record was removed or reordered)"
        if problem is None and not record.intact:
            problem = "content does not match its record_hash (the record was modified)"
        if problem:
            self.broken = ChainReport(False, self.checked, self.prev, record.request_id, record.seq, problem)
            return False
        self.prev, self.checked = record.record_hash, self.checked + 1
        return True

    def accepted(self, records: Iterable[ChainRecord]) -> Iterator[ChainRecord]:
        """Each of ``records`` that fits (:meth:`add`), in order; stops at the first that does not, or at one that
        cannot be read (:class:`UnreadableRecord`, raised while reading ``records``: :meth:`unreadable`)."""
        try:
            for record in records:
                if not self.add(record):
                    return
                yield record
        except UnreadableRecord as exc:
            self.unreadable(exc.seq, exc.request_id, exc.reason)

    def from_head(self, records: Iterator[ChainRecord]) -> Iterator[ChainRecord]:
        """``records`` from the record of the head this check starts from: that one must still be there, intact,
        with the head's hash (else :attr:`broken` names it); then those after it, to check."""
        seq, head_hash = self.checked, self.prev
        try:
            record = next(records, None)
        except UnreadableRecord:
            self.checked = seq - 1  # the chain breaks at the head's own record (:meth:`accepted` says why)
            raise
        problem = None
        if record is None or record.seq != seq:
            problem = f"record seq {seq}, the head of the last full verification, is gone (removed after it)"
        elif not record.intact:
            problem = "content does not match its record_hash (the record was modified)"
        elif record.record_hash != head_hash:
            problem = (
                "its hash is not the head hash the last full verification reached (the record was rewritten, or "
                "that verification is not of this log)"
            )
        if problem is None:
            yield from records
            return
        request_id, prev = (None, head_hash) if record is None else (record.request_id, record.prev_hash)
        self.checked, self.prev = seq - 1, prev
        self.broken = ChainReport(False, seq - 1, prev, request_id, seq, problem)

    def unreadable(self, seq: int, request_id: str, problem: str) -> None:
        """The next record, ``seq``, cannot be read (``problem``): the chain breaks there, or at the gap before it."""
        self.broken = ChainReport(False, self.checked, self.prev, request_id, seq, self._gap(seq) or problem)

    def _gap(self, seq: int) -> str | None:
        return None if seq == self.checked + 1 else f"sequence gap: expected seq {self.checked + 1}, found {seq}"

    def report(self, rows: int) -> ChainReport:
        """The result, given how many request rows the log holds at or before the last seq checked (records appended
        by other writers meanwhile are not counted; missing rows and rows outside the chain break it)."""
        if self.broken is not None:
            return self.broken
        if rows == self.checked:
            return ChainReport(True, self.checked, self.prev)
        problem = (
            f"{self.checked - rows} record(s) at or before seq {self.checked} are missing (removed after they were "
            "verified)"
            if rows < self.checked
            else f"{rows - self.checked} request row(s) lie outside the chain (inserted by hand?)"
        )
        return ChainReport(False, self.checked, self.prev, None, None, problem)
