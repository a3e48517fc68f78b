"""``attribution-audit spaces``: learned spaces fitted on the catalogue's artist labels, used with ``--space NAME``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from attribution_audit.cli.common import (
    EmbedderOption,
    FormatOption,
    JsonOption,
    OutputFormat,
    Typer,
    audit_of,
    choice,
    emit,
    output_format,
    settings_of,
)
from attribution_audit.cli.progress import ProgressDisplay
from attribution_audit.domain.params import DEFAULT_K
from attribution_audit.domain.projection import DEFAULT_CROPS, MAX_CROPS

app = Typer(help="Learned spaces (fit, list).\n\n\b\nExample: attribution-audit spaces list --format json")


class LearnedBase(StrEnum):
    content = "content"
    style = "style"
    content_style = "content+style"


class FitMethod(StrEnum):
    lda = "lda"


@app.command("fit")
def spaces_fit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the space (a new one, or a refit of an existing one).")],
    base: Annotated[
        LearnedBase,
        typer.Option("--from", parser=choice(LearnedBase, "from"), help="The base space(s) the projection reads."),
    ],
    method: Annotated[
        FitMethod, typer.Option(parser=choice(FitMethod, "method"), help="lda: regularised linear discriminants.")
    ] = FitMethod.lda,
    shrinkage: Annotated[
        float | None,
        typer.Option(
            help="LDA shrinkage in (0, 1); default: the best of 0.01, 0.1, 0.5, 0.9 on the held-out works (on a tie, "
            "the strongest)."
        ),
    ] = None,
    k: Annotated[
        int,
        typer.Option(
            "--k",
            min=1,
            help="K of the requests whose confidence the version's own model scores (it is fitted at this K; "
            "requests at another K get the default formula's).",
        ),
    ] = DEFAULT_K,
    crops: Annotated[
        int,
        typer.Option(
            "--crops",
            min=0,
            max=MAX_CROPS,
            help="N crops of each work embedded too, so that each artist's works vary in content as queries do; "
            "costs N embeddings per work. 0 fits on the stored vectors only: fast, no model forward pass.",
        ),
    ] = DEFAULT_CROPS,
    embedder: EmbedderOption = None,
) -> None:
    """Fit a projection on the catalogue's artist labels and store it as the space's next version: fitted on the
    works and on --crops crops of each (cut from its image file, seeded by it, embedded by the collection's
    embedder); validated on whole content groups held out (works of every artist that share content: a query is new
    content), or on a fifth of each artist's works where the groups leave fewer than two artists to train on. The
    held-out works also fit the version's own confidence model at K = --k, which its requests at that K use unless
    `calibrate --space` fits one.

    \b
    Example: attribution-audit spaces fit painters --from content
    """
    from attribution_audit.services.spaces import fit_space

    settings = settings_of(ctx, embedder)
    with ProgressDisplay(f"spaces fit {name}: crops") as progress:
        result = fit_space(settings, audit_of(settings), name, base.value, method.value, shrinkage, k, crops, progress)
    space, scores = result.space, result.space.validation
    typer.echo(
        f"stored {space.name} version {space.version}: {space.dim}-d from {space.base}, {space.n_works} works of "
        f"{space.n_artists} artists, shrinkage {scores['shrinkage']:g}, fitted in {result.seconds:.1f} s; "
        f"held-out ({scores.get('split', 'per artist')}) artist hit@1 {scores['hit@1']:.3f} "
        f"(base {scores['base_hit@1']:.3f}), hit@10 {scores['hit@10']:.3f} (base {scores['base_hit@10']:.3f})"
    )
    typer.echo(_crops_line(result.crops, space.n_works))
    own = scores["confidence"]
    right = (
        f"right top artist at K = {k}, the other parameters the defaults (its artists' scores; hit@1: the nearest work)"
    )
    if own["kind"] == "logistic":
        typer.echo(
            f"confidence: {own['model']}, fitted on {own['held_out_works']} held-out works ({own['right']} with the "
            f"{right}): cross-validated AUROC {own['cv_auroc']:.3f}, ECE {own['cv_ece']:.3f} (the default "
            f"formula there: AUROC {own['default_auroc']:.3f}, ECE {own['default_ece']:.3f}); requests in this "
            f"version at K = {k} use it unless `calibrate --space` fits one (at another K: the default formula)"
        )
    else:
        typer.echo(
            f"confidence: {own['model']}, the held-out rate {own['rate']:.3f} for every request at K = {k} "
            f"({own['right']} of {own['held_out_works']} held-out works with the {right}, Laplace-smoothed: "
            "(right + 1) / (works + 2); too few right or wrong to rank requests); fit one with `calibrate --space` "
            "on labelled queries"
        )
    if result.outdated:
        models = ", ".join(f"{model} (--top {top})" for model, top in result.outdated.items())
        typer.echo(
            f"note: the calibrate model(s) {models} of {space.name} version {space.version - 1} do not apply to "
            f"version {space.version}, whose requests use its own model until you run `attribution-audit calibrate "
            f"LABELLED.csv --space {space.name}` again (with each --top)",
            err=True,
        )
    if k > result.training_works:  # every held-out answer ranked all of them: K says nothing more there
        typer.echo(
            f"note: K = {k} is more than the {result.training_works} training works each held-out work was compared "
            f"against ({space.n_works} works less those held out): the own model was fitted on answers that rank "
            f"all of them, not {k} works; fit it at --k {result.training_works} or fewer, or ingest more works",
            err=True,
        )
    if (per_artist := space.n_works / space.n_artists) < k:  # equal shares: the most works among the K
        typer.echo(
            f"note: {per_artist:.1f} works per artist on average, fewer than K = {k}: the top artist (the "
            "largest share of the K works) then favours the artists with more works; attribute in this space with "
            f"--top centroid (the artists' centroids, which do not count works), --top nearest, or --k "
            f"{max(1, int(per_artist))} or fewer",
            err=True,
        )


@app.command("list")
def spaces_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table, as_json: JsonOption = False) -> None:
    """Every learned space version: `--space NAME` uses the newest; replays use the one they recorded.

    \b
    Example: attribution-audit spaces list --format json
    """
    from attribution_audit.services.spaces import list_spaces

    spaces = list_spaces(audit_of(ctx.obj))
    recorded = LIST_COLUMNS[: LIST_COLUMNS.index("hit@1")]  # as list_spaces holds them
    rows = [
        {key: space[key] for key in recorded}
        | {
            "hit@1": space["validation"]["hit@1"],
            "hit@10": space["validation"]["hit@10"],
            "confidence": _own_model(space["validation"].get("confidence", {})),
        }
        for space in spaces
    ]
    emit(output_format(fmt, as_json), data=spaces, rows=rows, columns=LIST_COLUMNS)  # a header also with no rows


LIST_COLUMNS = (
    "name",
    "version",
    "base",
    "method",
    "dimension",
    "works",
    "artists",
    "artists_since_fit",
    "collection",
    "hit@1",
    "hit@10",
    "confidence",
)


def _crops_line(crops: dict[str, Any], works: int) -> str:
    """What `spaces fit` says of the crops it fitted on."""
    if not crops["per_work"]:
        return "crops: none (--crops 0): fitted on the works' stored vectors only"
    if not crops["works"]:
        return (
            f"crops: none embedded: none of the {works} works has a readable image file as ingested (a catalogue "
            "ingested from precomputed --embeddings has none); fitted on the works' stored vectors only"
        )
    embedded = crops["works"] * crops["per_work"]
    without = crops["without_image"]
    missing = (
        f"; {without} of {works} works without a readable image file as ingested ({_skipped(crops)}) fitted on "
        "their stored vector only"
        if without
        else ""
    )
    return (
        f"crops: {embedded} embedded ({crops['per_work']} of each of {crops['works']} works) in "
        f"{crops['seconds']:.1f} s{missing}"
    )


def _skipped(crops: dict[str, Any]) -> str:
    """The reasons works were not cropped, each with its count, and the first such work."""
    first = crops["first_skipped"]
    reasons = ", ".join(f"{reason}: {count}" for reason, count in crops["skipped"].items())
    return f"{reasons}; first: work {first['work_id']}, {first['reason']}"


def _own_model(own: dict[str, Any]) -> str | None:
    """The version's own confidence model (the held-out rate, when it is that constant) and the K it scores (its
    requests at another K get the default formula)."""
    from attribution_audit.services.spaces import HELD_OUT_RATE

    if "model" not in own:
        return None
    model = f"{HELD_OUT_RATE} {own['rate']:.3f} ({own['model']})" if own.get("kind") == HELD_OUT_RATE else own["model"]
    return f"{model} at K = {own['parameters'].get('k', DEFAULT_K)}"
