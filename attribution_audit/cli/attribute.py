"""``attribution-audit attribute`` and ``calibrate``: attribute generated images; fit the confidence model."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli.common import (
    NEIGHBOUR_COLUMNS,
    EfOption,
    EmbedderOption,
    ExactChoice,
    FormatOption,
    JsonOption,
    OutputFormat,
    SharesChoice,
    SpaceOption,
    TopChoice,
    audit_of,
    checked,
    choice,
    emit,
    neighbour_rows,
    num,
    output_format,
    print_attribution,
    say_signed,
    say_unseen,
    settings_of,
)
from attribution_audit.domain.params import AttributionParams

DEFAULTS = AttributionParams()
TopOption = Annotated[
    TopChoice,
    typer.Option(
        parser=choice(TopChoice, "top"),
        help="The reported top artist: the largest share (ties to the closest work), the artist of the nearest "
        "work (better when artists have unequal numbers of works), or in a learned space the artist of maximum "
        "posterior among the artists' centroids (right more often there; refused in content, style and fused). "
        "See docs/quality.md.",
    ),
]
DEFAULT_WEIGHTS = ",".join(f"{weight:g}" for weight in DEFAULTS.fusion_weights)


def attribute(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Generated image(s) to attribute.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Number of nearest works to attribute.")] = DEFAULTS.k,
    max_distance: Annotated[
        float | None, typer.Option(help="Keep only works within this cosine distance (at most --k).")
    ] = DEFAULTS.max_distance,
    oversampling: Annotated[
        int, typer.Option(min=1, help="HNSW returns k x this many candidates to re-rank.")
    ] = DEFAULTS.oversampling,
    verify: Annotated[
        str,
        typer.Option(
            metavar="always|off|sample:RATE",
            help="Exact recall check of the HNSW result: always, off, or a random share of the requests "
            "(sample:0.1 checks one in ten; RATE in [0, 1]).",
        ),
    ] = DEFAULTS.verify,
    exact: Annotated[
        ExactChoice, typer.Option(parser=choice(ExactChoice, "exact"), help="Exact method for the check.")
    ] = ExactChoice(DEFAULTS.exact_method),
    shares: Annotated[
        SharesChoice,
        typer.Option(
            parser=choice(SharesChoice, "shares"),
            help="Artist shares: equal, or similarity (softmax of similarity / temperature).",
        ),
    ] = SharesChoice(DEFAULTS.shares),
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature of --shares similarity.")
    ] = DEFAULTS.temperature,
    top: TopOption = TopChoice(DEFAULTS.top),
    space: SpaceOption = DEFAULTS.space,
    fusion_weights: Annotated[str, typer.Option(help="Fused: weights of content,style.")] = DEFAULT_WEIGHTS,
    rrf_k: Annotated[int, typer.Option(help="Fused: the k of reciprocal rank fusion.")] = DEFAULTS.rrf_k,
    ef: EfOption = None,
    embedder: EmbedderOption = None,
    fmt: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
) -> None:
    """Find the K nearest works of each image; each result is printed only once it is in the audit log.

    \b
    Example: attribution-audit attribute .demo/catalogue/generated/gen_a5_0.png --k 5 --format json
    """
    from attribution_audit.api import attribute_files
    from attribution_audit.errors import AttributionAuditError, ImageError
    from attribution_audit.services.attribute import Note
    from attribution_audit.services.checkpoints import Signed

    params = checked(
        AttributionParams,
        k=k,
        max_distance=max_distance,
        oversampling=oversampling,
        verify=verify,
        exact_method=exact.value,
        shares=shares.value,
        temperature=temperature,
        top=top.value,
        space=space,
        fusion_weights=_weights(fusion_weights),
        rrf_k=rrf_k,
    )
    fmt = output_format(fmt, as_json)
    settings = settings_of(ctx, embedder, ef)
    records, rows, failed, done = [], [], 0, 0
    try:
        with contextlib.closing(attribute_files(settings, audit_of(settings), images, params)) as results:
            for result in results:
                if isinstance(result, ImageError):
                    typer.echo(f"error: {result}", err=True)
                    failed += 1
                elif isinstance(result, Signed):
                    say_signed(result)
                elif isinstance(result, Note):
                    typer.echo(f"note: {result}", err=True)
                else:
                    done += 1
                    if fmt is OutputFormat.table:
                        print_attribution(result)
                    else:
                        records.append(result.as_json())
                        rows += neighbour_rows(result)
    except AttributionAuditError as exc:  # a run stopped by one: the attributions before it are logged, and shown
        stopped: AttributionAuditError | None = exc
    except BrokenPipeError:  # the output's reader is gone (`| head`): the run stops there, as click then exits 1
        with contextlib.suppress(OSError):  # (the errors may go to that reader too)
            rest = "" if done == len(images) else "; the others were not attributed"
            typer.echo(
                f"note: the output was closed after {done} of {len(images)} images were attributed and recorded "
                f"(each in the audit log: `attribution-audit audit list`){rest}",
                err=True,
            )
        raise
    else:
        stopped = None
    if fmt is not OutputFormat.table and (stopped is None or done):
        emit(fmt, data=records, rows=rows, columns=NEIGHBOUR_COLUMNS)
    if stopped is not None:
        if done:
            typer.echo(f"note: {done} of {len(images)} images were attributed and recorded before this error", err=True)
        raise stopped
    if failed:
        raise typer.Exit(1)


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"fusion weights {text!r}: two numbers, content,style (e.g. 1,1)") from None


def calibrate(
    ctx: typer.Context,
    labelled: Annotated[
        Path,
        typer.Argument(
            help="CSV of labelled generated images: path,artist (a relative path is read from the CSV's folder)."
        ),
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="K used for the features.")] = DEFAULTS.k,
    space: SpaceOption = DEFAULTS.space,
    top: TopOption = TopChoice(DEFAULTS.top),
    folds: Annotated[int, typer.Option(min=2, max=20, help="Folds of the cross-validation.")] = 5,
    plot: Annotated[
        Path | None, typer.Option(help="Write the reliability diagram (out-of-fold predictions) to this PNG.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Store the model even if it ranks worse than the confidence requests keep."),
    ] = False,
    embedder: EmbedderOption = None,
) -> None:
    """Fit the logistic confidence model on labelled queries (entropy, NN distance, margin, top artist share,
    agreement between spaces, agreement of spaces, centroid log-odds in this and in the other learned spaces, in a
    learned space the crop log-odds); print its cross-validated AUROC, Brier score and ECE beside the default
    formula's, the NN distance's and those
    of the confidence requests keep without it. Later requests in that space under that --top rule use it and record
    its version. It needs at least --folds right and --folds wrong top artists among the labelled queries (the
    demo's six images are too few: it refuses and stores nothing), and refuses a model whose cross-validated AUROC
    is below 0.5 (worse than chance), or below that of the confidence requests keep without it (an earlier model of
    the space and rule, else in a learned space its own model fitted at --k, else the default formula), scored on
    the same queries (an earlier model fitted on them scores in-sample there, which the refusal says), unless
    --force: its scores and --plot are still written, and requests keep that confidence.

    \b
    Example: attribution-audit calibrate .demo/catalogue/queries.csv --k 5 --folds 3 --plot .demo/reliability.png
    """
    from attribution_audit.services.calibrate import calibrate_labelled

    settings = settings_of(ctx, embedder)
    report = calibrate_labelled(
        settings, audit_of(settings), labelled, k, space=space, top=top.value, folds=folds, plot=plot, force=force
    )
    stored = "fitted, not stored" if report.model_name is None else f"stored {report.model_name}"
    scores = report.scores
    typer.echo(
        f"{stored}: {report.n_samples} labelled queries ({report.n_positive} correct), "
        f"training AUROC {num(scores['auroc'])}, Brier {num(scores['brier'])}"
    )
    typer.echo(
        f"{report.folds}-fold cross-validated: AUROC {num(scores['cv_auroc'])}, Brier {num(scores['cv_brier'])}, "
        f"ECE {num(scores['cv_ece'])}; default formula: AUROC {num(scores['default_auroc'])}, "
        f"ECE {num(scores['default_ece'])}; NN distance alone: AUROC {num(scores['nn_distance_auroc'])}"
    )
    typer.echo(
        f"without it requests keep {report.baseline}: AUROC {num(report.baseline.auroc)}, "
        f"ECE {num(report.baseline.ece)} on these queries"
        + (f" (in-sample: fitted on {report.baseline.fitted_on})" if report.baseline.fitted_on else "")
    )
    if report.plot is not None:
        typer.echo(f"reliability diagram: {report.plot}")
    say_unseen(labelled, report.unseen, report.n_samples)
    if report.refused is not None:
        typer.echo(f"error: {report.refused}", err=True)
        raise typer.Exit(1)
