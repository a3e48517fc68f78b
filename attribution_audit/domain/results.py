"""What an attribution produced: ranked neighbours, indicators and shares, and how two results differ."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from attribution_audit.domain.points import Hit


@dataclass(frozen=True)
class Neighbour:
    """A ranked work; ``artist`` as recorded in the catalogue, ``canonical_artist`` after alias merges;
    ``image_sha256`` the digest of the image it was attributed as (None in records before revision 0015)."""

    rank: int
    work_id: str
    catalogue: str
    artist: str
    similarity: float
    distance: float
    share: float
    canonical_artist: str = ""
    work_version: int | None = None
    image_sha256: str | None = None


@dataclass(frozen=True)
class Attribution:
    """A committed attribution, as printed by ``attribute`` and ``audit show``."""

    request_id: str
    seq: int
    record_hash: str
    created_at: datetime
    image: str
    image_sha256: str
    k: int
    neighbours: list[Neighbour]
    artist_shares: dict[str, float]
    entropy: float
    nn_distance: float | None
    margin: float | None
    top_artist: str | None
    top_artist_share: float | None
    overlap_at_k: float | None
    confidence: float
    confidence_model: str
    embedder_fingerprint: str
    catalogue_version: str
    index_params: dict[str, Any]
    parameters: dict[str, Any]
    requester: str
    embedder_name: str
    store_kind: str
    collection: str
    prev_hash: str
    replay_of: str | None = None
    evaluation_run_id: int | None = None  # set on the requests an evaluation run made
    copy_of: str | None = None  # the work this image is a near-copy of (copy detection), if any
    copy_score: float | None = None  # copy detection's score (see copy_method): 0.55 and above is a copy
    copy_status: str | None = None  # copy, no_copy, "not_run: <why>" or "failed: <why>"; None: no check (replays)
    copy_method: str | None = None  # the copy rule's version: scores of different rules are not comparable
    agreement: float | None = None  # share of the other base space's K nearest works that are the top artist's
    agreement_spaces: float | None = None  # share of the shard's other spaces whose top artist is this one
    centroid_log_odds: float | None = None  # the top artist's log-odds among a learned space's artist centroids
    centroid_log_odds_others: float | None = None  # its mean log-odds in the shard's other learned spaces
    crop_log_odds: float | None = None  # its mean log-odds over the query's corner crops, in the request's space
    # The other learned spaces those two read, "name:version,..." (:func:`space_versions`); None before revision 0018.
    other_space_versions: str | None = None
    confidence_model_sha256: str | None = None  # the stored model's fingerprint (None: a default formula, or older)
    # Whether the image is one colour where it is attributed (its nearest works then share only that colour); None:
    # not looked at (evaluation runs, records before revision 0024).
    one_colour: bool | None = None
    intact: bool = True  # whether the stored record still matches its record_hash (False: changed after writing)

    def copy_verdict(self) -> str:
        """The copy check in words: 'near-copy of W3', 'no near-copy', 'not run: <why>' or 'failed: <why>', with
        the score and the rule that computed it, then what a copy's status adds (the other works of an identical
        file); 'not checked' when no check is recorded (replays, old records)."""
        status = self.copy_status or (None if self.copy_score is None else "copy" if self.copy_of else "no_copy")
        if status is None:
            return "not checked"
        word, _, also = status.partition(": ")
        words = {"copy": f"near-copy of {self.copy_of}", "no_copy": "no near-copy"}.get(word)
        words = words or status.replace("not_run", "not run", 1)
        score = "n/a" if self.copy_score is None else f"{self.copy_score:.3f}"
        rule = self.copy_method or "not recorded (before revision 0011)"
        return f"{words} (copy score {score}, rule {rule})" + (f"; {also}" if word == "copy" and also else "")

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form of the CLI."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["shares"] = [n.share for n in self.neighbours]
        return data


@dataclass
class Outcome:
    """What one search produced, before it is recorded."""

    neighbours: list[Neighbour]
    candidates: list[tuple[str, float]]
    overlap_at_k: float | None
    exact_method: str | None
    catalogue_version: str
    features: dict[str, float | None] = field(default_factory=dict)
    top_artist: str | None = None
    top_artist_share: float | None = None
    artist_shares: dict[str, float] = field(default_factory=dict)
    copy_of: str | None = None
    copy_score: float | None = None
    copy_status: str | None = None
    copy_method: str | None = None
    # The first copy_depth works of each base space, by space, when the copy check follows (not recorded).
    copy_pool: dict[str, list[Hit]] = field(default_factory=dict, compare=False, repr=False)
    # The version of each other learned space the cross-space indicators read (None: not known, not recorded).
    other_versions: dict[str, int] | None = None
    # The version of the learned space the neighbours were found in (None in a base space): the record names it.
    space_version: int | None = None
    one_colour: bool | None = None  # whether the image is one colour where it is attributed (None: not looked at)


def space_versions(versions: dict[str, int]) -> str:
    """The recorded form of learned space versions: ``name:version`` joined by commas, sorted by name (empty for
    none); learned space names hold neither character."""
    return ",".join(f"{name}:{version}" for name, version in sorted(versions.items()))


def parse_space_versions(text: str) -> dict[str, int]:
    """The versions :func:`space_versions` wrote (ValueError for text it cannot have written)."""
    pairs = [item.rsplit(":", 1) for item in text.split(",")] if text else []
    return {name: int(version) for name, version in pairs}


def as_utc(moment: datetime) -> datetime:
    """Timestamps are stored in UTC; SQLite returns them without a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Indicators recorded since a later revision, by the revision that added their column: a record made before holds
# None, as does one where the indicator measured none (e.g. no other learned space holds the top artist's centroid).
LATER_INDICATORS = {
    "agreement": "0012",
    "agreement_spaces": "0013",
    "centroid_log_odds": "0016",
    "centroid_log_odds_others": "0017",
    "other_space_versions": "0018",
    "confidence_model_sha256": "0019",
    "crop_log_odds": "0022",
}


@dataclass(frozen=True)
class WorkChanges:
    """What a replay changed of its record's answer: its top artist, and how many of the K works left, came in,
    moved rank or are another version of their image (re-ingested since)."""

    top_changed: bool = False
    removed: int = 0
    added: int = 0
    moved: int = 0
    new_versions: int = 0

    def __str__(self) -> str:
        if self.removed or self.added:
            works = f"{self.removed} work(s) out, {self.added} in"
        else:
            works = "the same works" + (" in another order" if self.moved else "")
        versions = f" ({self.new_versions} with a new image version)" if self.new_versions else ""
        return f"top artist {'changed' if self.top_changed else 'unchanged'}; {works}{versions}"


@dataclass(frozen=True)
class ReplayDiff:
    """How a replay differs from its record: ``changed`` lines, where the record holds a value (or a None written over
    one: the record no longer matches its hash), and ``not_recorded`` later indicators, None in an intact record and
    valued in the replay (by name, with the replay's value): measured as none then, or the record predates them."""

    changed: list[str]
    not_recorded: dict[str, Any]
    works: WorkChanges = WorkChanges()

    @property
    def not_recorded_lines(self) -> list[str]:
        """One line for each indicator not recorded then."""
        return [
            f"~ {name}: not recorded -> {value} (null in the record: measured as none then, or the record predates "
            f"revision {LATER_INDICATORS[name]})"
            for name, value in self.not_recorded.items()
        ]

    @property
    def lines(self) -> list[str]:
        """Every line: the changes, then the indicators not recorded then."""
        return self.changed + self.not_recorded_lines

    @property
    def verdict(self) -> str:
        """The summary under the lines: where something the record holds changed, whether the top artist and the
        works did."""
        if self.changed:
            return str(self.works)
        if not self.not_recorded:
            return "no differences"
        return (
            f"no differences in what the record holds; {len(self.not_recorded)} indicator(s) not recorded then: "
            + ", ".join(self.not_recorded)
        )


_MODEL_CHANGED = (
    " (the stored confidence model the record names no longer matches the one that scored it: its calibration_models "
    "row was changed after the request)"
)


def diff_attributions(before: Attribution, after: Attribution) -> ReplayDiff:
    """The differences between a recorded attribution and its replay. A later indicator the record holds as None and
    the replay values is a change only in a record that no longer matches its hash (a None written over a value by
    hand), else it is listed as not recorded: it may have been measured as none, or predate its column."""
    lines = []
    not_recorded: dict[str, Any] = {}
    old = {(n.catalogue, n.work_id): n for n in before.neighbours}
    new = {(n.catalogue, n.work_id): n for n in after.neighbours}
    for key in sorted(old.keys() - new.keys(), key=lambda k: old[k].rank):
        lines.append(f"- removed {key[1]} ({old[key].artist}), was rank {old[key].rank}")
    for key in sorted(new.keys() - old.keys(), key=lambda k: new[k].rank):
        lines.append(f"+ added {key[1]} ({new[key].artist}) at rank {new[key].rank}")
    kept = sorted(old.keys() & new.keys(), key=lambda k: new[k].rank)
    works = WorkChanges(
        top_changed=before.top_artist != after.top_artist,
        removed=len(old.keys() - new.keys()),
        added=len(new.keys() - old.keys()),
        moved=sum(old[key].rank != new[key].rank for key in kept),
        new_versions=sum(old[key].work_version != new[key].work_version for key in kept),
    )
    for key in kept:
        if old[key].rank != new[key].rank:
            lines.append(f"~ {key[1]} moved from rank {old[key].rank} to {new[key].rank}")
        if old[key].work_version != new[key].work_version:  # its image was replaced by a later ingest
            lines.append(
                f"~ {key[1]} ({new[key].artist}): version {old[key].work_version} -> {new[key].work_version}, "
                f"similarity {old[key].similarity:.4f} -> {new[key].similarity:.4f}"
            )
    for name in (
        "entropy",
        "nn_distance",
        "margin",
        *LATER_INDICATORS,
        "confidence",
        "confidence_model",
        "top_artist",
    ):
        a, b = getattr(before, name), getattr(after, name)
        if a is None and b is not None and name in LATER_INDICATORS and before.intact is not False:
            not_recorded[name] = b
            continue
        same = a == b if not isinstance(a, float) or not isinstance(b, float) else abs(a - b) < 1e-9
        if not same:
            lines.append(f"~ {name}: {a} -> {b}{_MODEL_CHANGED if name == 'confidence_model_sha256' and a else ''}")
    checked = (before.overlap_at_k, after.overlap_at_k)
    if None not in checked and checked[0] != checked[1]:  # both checked against the exact search (verify's sample)
        lines.append(f"~ overlap@K with the exact search: {checked[0]} -> {checked[1]}")
    if before.catalogue_version != after.catalogue_version:
        lines.append(f"~ catalogue version: {before.catalogue_version} -> {after.catalogue_version}")
    return ReplayDiff(lines, not_recorded, works)


@dataclass(frozen=True)
class RequestDraft:
    """An attribution ready to be appended to the audit log: what was asked, with what, and what it produced.

    ``evaluation`` = (evaluation run id, labelled query id) tags a request made by ``evaluate run``.
    """

    image: str
    image_sha256: str
    content_vector: np.ndarray
    style_vector: np.ndarray | None
    requester: str
    embedder_name: str
    embedder_fingerprint: str
    store_kind: str
    collection: str
    index_params: dict[str, Any]
    parameters: dict[str, Any]
    k: int
    outcome: Outcome
    confidence: float
    confidence_model: str
    replay_of: str | None = None
    evaluation: tuple[int, int] | None = None
    confidence_model_sha256: str | None = None  # the stored model's :meth:`LogisticModel.fingerprint`
    crop_vectors: np.ndarray | None = None  # its crops' vectors as rows (QueryVectors.crop_rows)
