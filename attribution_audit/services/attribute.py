"""The ``attribute`` use case: attribute image files one by one, each returned only once it is in the audit log,
with the automatic checkpoints of the chain written on the way."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from attribution_audit.config import Settings
from attribution_audit.domain.confidence import default_model_name
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.domain.spaces import LearnedSpace
from attribution_audit.errors import ImageError
from attribution_audit.services.attribution import Attributor, FlatImage, SpaceSinceFit, refit_command
from attribution_audit.services.checkpoints import Signed, auto_checkpoint, guard_witness, refuse_unsignable
from attribution_audit.services.spaces import HeldOutRate
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


@dataclass(frozen=True)
class OwnConfidenceAtOtherK:
    """(At another K, or under another top-artist rule: the name predates the rule.) The learned space version's own
    confidence model was fitted at ``fitted_k`` under the top-artist rule
    ``fitted_top``, not at the requests' ``k`` under their ``top``, and no ``calibrate`` model was fitted for them:
    the requests' confidence is the default formula of their rule (recorded as such)."""

    space: str
    version: int
    base: str
    model: str
    fitted_k: int
    fitted_top: str
    k: int
    top: str

    def __str__(self) -> str:
        calibrate = f"`attribution-audit calibrate LABELLED.csv --space {self.space} --k {self.k}"
        calibrate += "`" if self.top == AttributionParams().top else f" --top {self.top}`"
        if self.top == self.fitted_top:
            remedy = f"{refit_command(self.space, self.base, self.k)} fits one at K = {self.k}, or {calibrate}"
        else:  # spaces fit fits its own model under its rule only
            remedy = f"{calibrate} fits one for --top {self.top} (spaces fit fits only --top {self.fitted_top})"
        return (
            f"space {self.space} (version {self.version})'s own confidence model {self.model} was fitted at K = "
            f"{self.fitted_k} under --top {self.fitted_top}, not these requests' K = {self.k} under --top {self.top}: "
            f"their confidence is the default formula's ({default_model_name(self.top)}, recorded as their "
            f"confidence model); {remedy} on labelled queries"
        )


@dataclass(frozen=True)
class CropsOff:
    """The settings turned a learned-space request's corner crops off (ATTRIBUTION_AUDIT_QUERY_CROPS=0), but the
    confidence model that scores the requests weighs their crop log-odds: it scores them without it, at its least
    confident value."""

    model: str

    def __str__(self) -> str:
        return (
            f"ATTRIBUTION_AUDIT_QUERY_CROPS=0, but the confidence model {self.model} weighs the crop log-odds: these "
            "requests have none and it scores them as if their crops disagreed (lower confidence); set "
            "ATTRIBUTION_AUDIT_QUERY_CROPS=1, or fit a model without crops (`calibrate` with the setting at 0)"
        )


LearnedNote = SpaceSinceFit | OwnConfidenceAtOtherK | HeldOutRate | CropsOff
Note = FewerWorks | LearnedNote | FlatImage


def attribute_files(
    settings: Settings, audit: AuditStore, images: Sequence[Path], params: AttributionParams
) -> Generator[Attribution | ImageError | Signed | Note, None, None]:
    """Each image's committed attribution, or the ImageError that kept it out of the log (the others go on), and
    each checkpoint signed meanwhile (also when the caller stops at the attribution it follows and closes this
    generator). After an attribution of an image of one colour, a FlatImage note; after the first attribution, when
    K is more than the collection's works, a FewerWorks note, in a learned space fitted before some of the works'
    artists were ingested, a SpaceSinceFit note, and in a learned space whose own confidence model was fitted at
    another K or under another top-artist rule (no ``calibrate`` model there), an OwnConfidenceAtOtherK note.
    Refused up front when the witness file names another audit DB, or when an automatic checkpoint falls due among
    them without the key of the witnessed checkpoints."""
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
            try:
                yield attribution
            finally:  # also where the caller stopped at it (its output closed): the checkpoint due is signed
                signed = auto_checkpoint(settings, audit, attribution)
            if not noted:
                noted = True
                if works < params.k:
                    yield FewerWorks(params.k, works, attributor.store.collection, params.max_distance)
                yield from learned_notes(attributor, params)
            if attribution.one_colour:
                yield FlatImage(attribution.image)
            if signed is not None:
                yield signed


def learned_notes(attributor: Attributor, params: AttributionParams) -> Iterator[LearnedNote]:
    """The notes of requests in a learned space (none in a base space): artists ingested since its fit, its own
    model fitted at another K or under another top-artist rule (no ``calibrate`` model scores the requests instead),
    or that model scoring them but the held-out rate (the same confidence for every request), or the corner crops
    turned off under a model that weighs them; ``attribute`` and the service show them."""
    space, params = attributor.space_of(params)  # with a learned space's version
    if not isinstance(space, LearnedSpace):
        return
    since_fit = SpaceSinceFit.of(space)
    if since_fit is not None:
        yield since_fit
    own = attributor.own_fit(params)
    scoring = attributor.calibration_for(params)
    if own is not None and own[1:] != (params.k, params.top) and scoring is None:
        model, fitted_k, fitted_top = own
        yield OwnConfidenceAtOtherK(
            space.name, space.version, space.base, model, fitted_k, fitted_top, params.k, params.top
        )
    elif scoring is not None and (info := attributor.fitted_info(params)) is not None:
        held_out = HeldOutRate.of(info, scoring.name)  # the version's own model, when it is the held-out rate
        if held_out is not None:
            yield held_out
    if scoring is not None and not attributor.query_crops and scoring.weight("crop_log_odds") != 0:
        yield CropsOff(scoring.name)
