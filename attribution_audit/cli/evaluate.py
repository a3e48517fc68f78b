"""``attribution-audit evaluate``: the research note's experiments on labelled queries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli import copies
from attribution_audit.cli.attribute import TopOption
from attribution_audit.cli.common import (
    EmbedderOption,
    ExactChoice,
    FormatOption,
    NoiseKind,
    OutputFormat,
    QueriesArgument,
    SpaceChoice,
    SpaceOption,
    TopChoice,
    Typer,
    audit_of,
    checked,
    choice,
    emit,
    num,
    say_unseen,
    settings_of,
)
from attribution_audit.domain.params import MAX_K

app = Typer(
    help="The research note's experiments on labelled queries.\n\n\b\nExample: attribution-audit evaluate list",
)
OUT = Path("evaluation")
app.command("copies")(copies.evaluate_copies)


@app.command("run")
def evaluate_run(
    ctx: typer.Context,
    queries: QueriesArgument,
    k_max: Annotated[int, typer.Option(min=1, max=MAX_K, help="Curves are computed for K = 1..k-max.")] = 100,
    k: Annotated[
        int, typer.Option("--k", min=1, help="Fixed K for Table 1 (when true works are unknown) and confidence.")
    ] = 10,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, CSV tables, report.md and plots.")] = OUT,
    name: Annotated[str | None, typer.Option(help="Name of the query set (default: the file name).")] = None,
    space: SpaceOption = "content",
    top: TopOption = TopChoice.share,
    exact: Annotated[
        ExactChoice,
        typer.Option(parser=choice(ExactChoice, "exact"), help="Exact search HNSW is timed and compared against."),
    ] = ExactChoice.brute,
    embedder: EmbedderOption = None,
) -> None:
    """Attribute every labelled query (logged, tagged with the run) and compute the note's metrics; the confidence's
    quality is that of the --top rule's artist.

    \b
    Example: attribution-audit evaluate run .demo/catalogue/queries.csv --k-max 20 --k 5 --out .demo/evaluation
    """
    from attribution_audit.evaluation.outputs import check_out, write_outputs
    from attribution_audit.services.evaluate import evaluate_queries

    if k > k_max:
        raise typer.BadParameter(f"--k {k} is larger than --k-max {k_max}")
    check_out(out)
    settings = settings_of(ctx, embedder)
    summary = checked(
        evaluate_queries,
        settings=settings,
        audit=audit_of(settings),
        queries=queries,
        name=name,
        k_max=k_max,
        k=k,
        space=space,
        exact=exact.value,
        top=top.value,
    )
    write_outputs(summary.metrics, out)
    overall = summary.metrics["overall"]["curves"]
    typer.echo(
        f"evaluation run {summary.run_id}: {summary.queries} queries ({summary.failed} unreadable), "
        f"{summary.metrics['recorded_k']} neighbours recorded per query; hit rate@1 "
        f"{num(overall[0]['hit_rate'])}, @{k} {num(overall[min(k, k_max) - 1]['hit_rate'])}; results in {out}"
    )
    say_unseen(queries, summary.unseen, summary.queries)


@app.command("compare-spaces")
def evaluate_compare_spaces(
    ctx: typer.Context,
    queries: QueriesArgument,
    k_max: Annotated[int, typer.Option(min=1, max=MAX_K, help="Curves are computed for K = 1..k-max.")] = 100,
    k: Annotated[int, typer.Option("--k", min=1, help="K of the side-by-side numbers.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write compare.json and compare.md here.")] = None,
    embedder: EmbedderOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Evaluate content, style and fused spaces on the same queries and print them side by side (the catalogue must
    have style vectors: ingest --spaces content,style).

    \b
    Example: attribution-audit evaluate compare-spaces .demo/catalogue/queries.csv --k-max 20 --k 5 --format csv
    """
    from attribution_audit.evaluation.outputs import check_out, write_comparison
    from attribution_audit.services.evaluate import compare_spaces_of

    if out is not None:
        check_out(out)
    settings = settings_of(ctx, embedder)
    rows = compare_spaces_of(settings, audit_of(settings), queries, k_max=k_max, k=k)
    shown = [{key: num(v) if isinstance(v, float) or v is None else v for key, v in row.items()} for row in rows]
    emit(fmt, data=rows, rows=rows, shown=shown)
    if out is not None:
        write_comparison(rows, shown, out)
        typer.echo(f"written to {out}", err=fmt is not OutputFormat.table)  # stdout stays CSV or JSON


@app.command("compare-exact")
def evaluate_compare_exact(
    ctx: typer.Context,
    queries: QueriesArgument,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query.")] = 10,
    space: Annotated[
        SpaceChoice, typer.Option(parser=choice(SpaceChoice, "space"), help="Vector space: content or style.")
    ] = SpaceChoice.content,
    out: Annotated[Path | None, typer.Option(help="Also write compare_exact.json and compare_exact.md here.")] = None,
    embedder: EmbedderOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """The note's appendix 1 on your collection: recall against brute force and latency of HNSW, KD-Tree and brute
    force for the labelled queries, and the build time of the exact indexes.

    \b
    Example: attribution-audit evaluate compare-exact .demo/catalogue/queries.csv --k 5
    """
    from attribution_audit.evaluation.outputs import check_out, exact_rows, write_compare_exact
    from attribution_audit.services.compare_exact import compare_exact_from_settings

    if out is not None:
        check_out(out)
    settings = settings_of(ctx, embedder)
    metrics = checked(
        compare_exact_from_settings,
        settings=settings,
        audit=audit_of(settings),
        queries=queries,
        k=k,
        space=space.value,
    )
    rows = exact_rows(metrics)
    shown = [{key: num(v) if isinstance(v, float) or v is None else v for key, v in row.items()} for row in rows]
    emit(fmt, data=metrics, rows=rows, shown=shown)
    if out is not None:
        write_compare_exact(metrics, shown, out)
        typer.echo(f"written to {out}", err=fmt is not OutputFormat.table)


@app.command("report")
def evaluate_report(
    ctx: typer.Context,
    run: Annotated[int, typer.Option("--run", help="Evaluation run id (an evaluate run or evaluate noise run).")],
    out: Annotated[Path, typer.Option(help="Folder for the outputs.")] = OUT,
) -> None:
    """Recompute a past run's metrics purely from the audit DB and write the same outputs.

    \b
    Example: attribution-audit evaluate report --run 1 --out .demo/evaluation
    """
    from attribution_audit.evaluation.outputs import write_noise_outputs, write_outputs
    from attribution_audit.services.evaluate import recompute_run

    kind, metrics = recompute_run(audit_of(ctx.obj), run)
    (write_noise_outputs if kind == "noise" else write_outputs)(metrics, out)
    typer.echo(f"evaluation run {run}: report written to {out}")


@app.command("noise")
def evaluate_noise(
    ctx: typer.Context,
    queries: QueriesArgument,
    noise: Annotated[
        Path | None,
        typer.Option(
            help="Manifest (CSV/JSONL/folder) of the noise works: another domain for heterogeneous noise, the same "
            "domain for homogeneous (default for homogeneous: the catalogue works left out of the reference index)."
        ),
    ] = None,
    reference_fraction: Annotated[
        float, typer.Option(help="Share of the catalogue, drawn at random with --seed, that forms the reference index.")
    ] = 0.5,
    levels: Annotated[
        str, typer.Option(help="Noise levels as fractions of the reference index (refused when not reachable).")
    ] = "0.1,0.25,0.5,0.75",
    kind: Annotated[
        NoiseKind,
        typer.Option(
            parser=choice(NoiseKind, "kind"),
            help="homogeneous (same domain: completes the reference index) or heterogeneous (another domain).",
        ),
    ] = NoiseKind.homogeneous,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the reference subset and of the noise sample.")] = 0,
    k: Annotated[int, typer.Option("--k", min=1, help="Attributed works per query.")] = 10,
    space: SpaceOption = "content",
    out: Annotated[Path, typer.Option(help="Folder for noise.json, noise.csv and noise.png.")] = OUT,
    embedder: EmbedderOption = None,
) -> None:
    """The note's noise experiment: attribute against a seeded random subset of the catalogue (the reference index),
    add noise at each level in a scratch copy, and report the mean overlap with the clean attribution.

    \b
    Example: attribution-audit evaluate noise .demo/catalogue/labelled.csv --reference-fraction 0.5 --levels 0.1,0.25,0.5,0.75 --k 5 --out .demo/evaluation
    """  # noqa: E501 (the example is one line, to paste)
    from attribution_audit.evaluation.outputs import check_out, write_noise_outputs
    from attribution_audit.services.noise import noise_from_settings

    check_out(out)
    try:
        fractions = [float(v) for v in levels.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"levels {levels!r}: give fractions such as 0.1,0.25,0.5") from None
    settings = settings_of(ctx, embedder)
    metrics = checked(
        noise_from_settings,
        settings=settings,
        audit=audit_of(settings),
        queries=queries,
        noise_manifest=noise,
        levels=fractions,
        kind=kind.value,
        reference_fraction=reference_fraction,
        seed=seed,
        k=k,
        space=space,
    )
    write_noise_outputs(metrics, out)
    typer.echo(
        f"reference index: {metrics['index_size']} of {metrics['catalogue_size']} works (seed {metrics['seed']}); "
        f"noise: {metrics['noise_source']}"
    )
    for row in metrics["levels"]:
        typer.echo(
            f"{kind.value} {row['level']:.0%} ({row['noise_works']} works): mean overlap {num(row['mean_overlap'])}, "
            f"noise in top {k} {num(row['noise_in_top_k'])}"
        )
    typer.echo(f"noise run {metrics['run_id']}; results in {out}")


@app.command("content-bias")
def evaluate_content_bias(
    ctx: typer.Context,
    queries: QueriesArgument,
    space: SpaceOption = "content",
    out: Annotated[Path, typer.Option(help="Folder for content_bias.json, content_bias.md and the histograms.")] = OUT,
    embedder: EmbedderOption = None,
) -> None:
    """The note's Figure 8: attribute each query with true works (K = its number of true works, logged) and
    compare its content similarity to the attributed works with that to its true inspiration works (Mann-Whitney).

    Content comes from a caption column (labelled CSV and catalogue manifest) embedded with CLIP's text tower when
    the embedder is CLIP, otherwise from the content image space; the report says which.

    \b
    Example: attribution-audit evaluate content-bias .demo/catalogue/labelled.csv --out .demo/evaluation
    """
    from attribution_audit.evaluation.outputs import check_out, metric_groups, write_content_bias_outputs
    from attribution_audit.services.content_bias import content_bias_from_settings

    check_out(out)
    settings = settings_of(ctx, embedder)
    metrics = checked(
        content_bias_from_settings, settings=settings, audit=audit_of(settings), queries=queries, space=space
    )
    write_content_bias_outputs(metrics, out)
    typer.echo(f"content from the {metrics['content_source']}: {metrics['content_source_reason']}")
    if metrics.get("caveat"):
        typer.echo(f"caveat: {metrics['caveat']}")
    for group, block in metric_groups(metrics).items():
        typer.echo(
            f"{group}: mean content similarity to attributed works {num(block['attributed']['mean'])}, to true "
            f"inspiration works {num(block['inspiration']['mean'])}; Mann-Whitney p {num_p(block['p_value'])}"
        )
    typer.echo(f"content-bias run {metrics['run_id']}; results in {out}")


def num_p(value: float | None) -> str:
    """A p-value as the note writes it (6.6e-116)."""
    return "n/a" if value is None else f"{value:.2g}"


@app.command("list")
def evaluate_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List evaluation runs, oldest first (JSON: with each run's settings).

    \b
    Example: attribution-audit evaluate list --format json
    """
    from attribution_audit.services.evaluate import evaluation_runs

    runs = evaluation_runs(audit_of(ctx.obj))
    rows = [
        {"id": r.id, "kind": r.kind, "status": r.status, "created_at": r.created_at, "embedder": r.embedder_name}
        for r in runs
    ]
    data = [{**row, "settings": run.settings} for row, run in zip(rows, runs, strict=True)]
    emit(fmt, data=data, rows=rows, columns=("id", "kind", "status", "created_at", "embedder"))
