"""The typer CLI: parses options, calls the library, prints. Library errors become one line and exit code 1."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from attribution_audit.config import Settings, load_settings
from attribution_audit.errors import AttributionAuditError


class _Commands(TyperGroup):
    """Turns any AttributionAuditError raised by a command into ``error: <message>`` and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AttributionAuditError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    help="Attribute generated images to catalogued works, with an audit trail.",
)
db_app = typer.Typer(no_args_is_help=True, help="Audit database schema.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
catalogue_app = typer.Typer(no_args_is_help=True, help="Catalogue lifecycle: withdraw works, check the store.")
artists_app = typer.Typer(no_args_is_help=True, help="Artists and their aliases.")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(catalogue_app, name="catalogue")
report_app = typer.Typer(no_args_is_help=True, help="Reports for compliance officers and analysts.")
app.add_typer(report_app, name="report")
evaluate_app = typer.Typer(no_args_is_help=True, help="The research note's experiments on labelled queries.")
app.add_typer(artists_app, name="artists")
app.add_typer(evaluate_app, name="evaluate")

EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="clip | clip:<hub id or path> | efficientnet-lite0 [env ATTRIBUTION_AUDIT_EMBEDDER]",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data folder of the embedded store and SQLite log [ATTRIBUTION_AUDIT_DATA_DIR]"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the audit DB [ATTRIBUTION_AUDIT_DATABASE_URL]")
    ] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(help="Qdrant server URL; unset = embedded shard [ATTRIBUTION_AUDIT_QDRANT_URL]"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Attribute generated images to catalogued works, with an audit trail."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    ctx.obj = load_settings(data_dir=data_dir, database_url=database_url, qdrant_url=qdrant_url)


def _settings(ctx: typer.Context, embedder: str | None = None) -> Settings:
    settings: Settings = ctx.obj
    return load_settings(**{**settings.__dict__, "embedder": embedder})


def _checked_engine(settings: Settings) -> Any:
    from attribution_audit.audit.db import check_schema, create_db_engine

    engine = create_db_engine(settings.resolved_database_url)
    check_schema(engine)
    return engine


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    from attribution_audit.vectorstore import open_store

    store = open_store(settings, settings.embedder)
    try:
        yield store
    finally:
        store.close()


# -- db ------------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the audit schema to the latest revision."""
    from attribution_audit.audit.db import create_db_engine, display_url, upgrade

    settings: Settings = ctx.obj
    engine = create_db_engine(settings.resolved_database_url)
    revision = upgrade(engine)
    typer.echo(f"audit database {display_url(settings.resolved_database_url)} is at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the audit database and the one this version needs."""
    from attribution_audit.audit.db import create_db_engine, current_revision, head_revision

    engine = create_db_engine(ctx.obj.resolved_database_url)
    typer.echo(f"current: {current_revision(engine) or 'none'}  head: {head_revision(engine)}")


# -- ingest --------------------------------------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="CSV/JSONL manifest (path,artist,work_id + extras), artist folders, or Wang JSON.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | jsonl | folder | wang")] = "auto",
    embedder: EmbedderOption = None,
    catalogue: Annotated[str | None, typer.Option(help="Catalogue name (default: the source's file name).")] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Precomputed vectors (.npy aligned with the manifest, .npz/.parquet with work_id) "),
    ] = None,
    failures: Annotated[Path | None, typer.Option(help="Where to write the failed rows (CSV).")] = None,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when some rows failed.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per embedding batch.")] = 32,
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
    spaces: Annotated[str, typer.Option(help="content, or content,style to also fill the style space.")] = "content",
) -> None:
    """Embed a catalogue's works into the vector store and record them in the audit DB (re-runs add nothing)."""
    from datetime import UTC, datetime

    from attribution_audit.catalogue.ingest import default_catalogue_name, ingest_source
    from attribution_audit.catalogue.manifest import open_source
    from attribution_audit.vectorstore import open_store

    with_style = {"content": False, "content,style": True}.get(spaces.replace(" ", ""))
    if with_style is None:
        raise typer.BadParameter(f"spaces {spaces!r}: use content or content,style")
    if with_style and embeddings is not None:
        raise typer.BadParameter("--spaces content,style needs the images: precomputed --embeddings fill content only")
    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    opened = open_source(source, fmt)
    name = catalogue or default_catalogue_name(opened.path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    options: dict[str, Any] = {
        "engine": engine,
        "catalogue": name,
        "requester": settings.resolved_requester,
        "batch_size": batch_size,
        "workers": workers,
        "failures_path": failures or settings.data_dir / "failures" / f"{name}-{stamp}.csv",
    }
    if embeddings is not None:
        from attribution_audit.catalogue.precomputed import load_vectors

        table = load_vectors(embeddings, opened)
        options |= {"embedder": None, "embedder_fingerprint": f"precomputed:{settings.embedder}"}
        options["vectors"] = lambda row: table.get(row.work_id)
    else:
        from attribution_audit.embedding import get_embedder
        from attribution_audit.embedding.style import style_embedder_for

        options["embedder"] = get_embedder(settings.embedder, batch_size=batch_size)
        if with_style:
            options["style_embedder"] = style_embedder_for(options["embedder"])
    store = open_store(settings, settings.embedder)
    try:
        report = ingest_source(opened, store=store, **options)
    finally:
        store.close()
    for failure in report.failures[:20]:
        typer.echo(f"failed: {source}:{failure.line} work_id={failure.work_id!r}: {failure.reason}", err=True)
    if report.failed > 20:
        typer.echo(f"... and {report.failed - 20} more failed rows", err=True)
    typer.echo(
        f"catalogue {report.catalogue}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.withdrawn} withdrawn (skipped), {report.failed} failed "
        f"(run {report.run_id}, {report.seconds:.1f} s)"
    )
    if report.same_image:
        first, twin = report.same_image[0]
        typer.echo(
            f"warning: {len(report.same_image)} work(s) have the same image file as another work of the catalogue "
            f"(e.g. {first} = {twin}); both will be attributed: withdraw one if they are the same work",
            err=True,
        )
    if report.labelled_queries:
        typer.echo(f"labelled query set {report.catalogue}: {report.labelled_queries} generated images")
    if report.failures_path:
        typer.echo(f"failed rows written to {report.failures_path}")
    if report.failures and not allow_failures:
        raise typer.Exit(1)


@catalogue_app.command("withdraw")
def catalogue_withdraw(
    ctx: typer.Context,
    work_ids: Annotated[list[str], typer.Argument(help="Work ids to exclude from new attributions.")],
    catalogue: Annotated[str, typer.Option(help="Catalogue of the works.")],
) -> None:
    """Exclude works from new attributions; past audit records that name them are kept."""
    from attribution_audit.catalogue.lifecycle import withdraw
    from attribution_audit.vectorstore import open_collection

    engine = _checked_engine(ctx.obj)
    points = withdraw(engine, catalogue, work_ids)
    for collection, ids in points.items():
        store = open_collection(ctx.obj, collection)
        try:
            store.delete(ids)
        finally:
            store.close()
    typer.echo(f"withdrew {len(set(work_ids))} work(s) from {catalogue}; removed from {len(points)} collection(s)")


@catalogue_app.command("check")
def catalogue_check(
    ctx: typer.Context,
    embedder: EmbedderOption = None,
    repair: Annotated[
        bool, typer.Option(help="Delete orphan points and forget missing ones (re-ingest after).")
    ] = False,
) -> None:
    """Compare the vector store with the audit DB; exit 1 if they disagree (and were not repaired)."""
    from attribution_audit.catalogue.lifecycle import check

    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    with _store(settings) as store:
        report = check(engine, store, repair=repair)
    typer.echo(
        f"{report.collection}: {report.points} points, {report.expected} expected; {len(report.orphans)} orphan, "
        f"{len(report.missing)} missing, {len(report.stale)} stale"
    )
    if report.repaired:
        typer.echo("repaired: orphan and stale points deleted; run `attribution-audit ingest` again to re-add works")
    elif not report.clean:
        raise typer.Exit(1)


@artists_app.command("merge")
def artists_merge(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The other spelling.")],
    canonical: Annotated[str, typer.Argument(help="The artist it is merged into.")],
) -> None:
    """Record that ALIAS is CANONICAL: reports and entropy use CANONICAL; past audit rows stay as recorded."""
    from attribution_audit.catalogue.lifecycle import merge_artists

    merge_artists(_checked_engine(ctx.obj), alias, canonical)
    typer.echo(f"merged {alias!r} into {canonical!r}")


@artists_app.command("list")
def artists_list(ctx: typer.Context) -> None:
    """List artists with their canonical name and number of active works."""
    from attribution_audit.catalogue.lifecycle import list_artists

    for name, canonical, works in list_artists(_checked_engine(ctx.obj)):
        typer.echo(f"{name}\t{canonical or '-'}\t{works}")


# -- attribute -------------------------------------------------------------------------------------------
@app.command()
def attribute(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Generated image(s) to attribute.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Number of nearest works to attribute.")] = 10,
    max_distance: Annotated[
        float | None, typer.Option(help="Keep only works within this cosine distance (at most --k).")
    ] = None,
    oversampling: Annotated[int, typer.Option(min=1, help="HNSW returns k x this many candidates to re-rank.")] = 4,
    verify: Annotated[str, typer.Option(help="Exact recall check: always | off | sample:RATE.")] = "always",
    exact: Annotated[str, typer.Option(help="Exact method for the check: brute | kdtree.")] = "brute",
    shares: Annotated[str, typer.Option(help="equal | similarity (softmax of similarity / temperature).")] = "equal",
    temperature: Annotated[float, typer.Option(help="Softmax temperature of --shares similarity.")] = 0.05,
    space: Annotated[str, typer.Option(help="content | style | fused (engine-side RRF of both spaces).")] = "content",
    fusion_weights: Annotated[str, typer.Option(help="Fused: weights of content,style.")] = "1,1",
    rrf_k: Annotated[int, typer.Option(help="Fused: the k of reciprocal rank fusion.")] = 60,
    embedder: EmbedderOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the K nearest works of each image; each result is printed only once it is in the audit log."""
    from attribution_audit.attribution import AttributionParams
    from attribution_audit.errors import ImageError
    from attribution_audit.runtime import open_attributor

    params = _params(
        AttributionParams,
        k=k,
        max_distance=max_distance,
        oversampling=oversampling,
        verify=verify,
        exact_method=exact,
        shares=shares,
        temperature=temperature,
        space=space,
        fusion_weights=_weights(fusion_weights),
        rrf_k=rrf_k,
    )
    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    results, failed = [], 0
    with open_attributor(settings, engine, settings.embedder) as attributor:
        for image in images:
            try:
                result = attributor.attribute(image, params)
            except ImageError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed += 1
                continue
            results.append(result)
            if not as_json:
                _print_attribution(result)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in results], indent=2))
    if failed:
        raise typer.Exit(1)


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"fusion weights {text!r}: two numbers, content,style (e.g. 1,1)") from None


def _params(factory: Any, **values: Any) -> Any:
    """Call ``factory``; its ValueError (a bad option value) becomes a usage error naming the problem."""
    try:
        return factory(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _print_attribution(result: Any) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(f"request {result.request_id}  seq {result.seq}  image {result.image}")
    typer.echo(
        f"  entropy {result.entropy:.3f}  nn_distance {fmt(result.nn_distance)}  margin {fmt(result.margin)}  "
        f"overlap@K {fmt(result.overlap_at_k)}  confidence {result.confidence:.3f} ({result.confidence_model})"
    )
    typer.echo(f"  {'rank':>4}  {'similarity':>10}  {'distance':>8}  {'share':>8}  {'artist':<28}  work")
    for n in result.neighbours:
        typer.echo(
            f"  {n.rank:>4}  {n.similarity:>10.4f}  {n.distance:>8.4f}  {n.share:>8.6f}  {n.artist:<28}  {n.work_id}"
        )
    artists = ", ".join(f"{artist} {share:.6f}" for artist, share in result.artist_shares.items())
    typer.echo(f"  artist shares: {artists or '-'}")


@app.command()
def calibrate(
    ctx: typer.Context,
    labelled: Annotated[Path, typer.Argument(help="CSV of labelled generated images: path,artist.")],
    k: Annotated[int, typer.Option("--k", min=1, help="K used for the features.")] = 10,
    embedder: EmbedderOption = None,
) -> None:
    """Fit the logistic confidence model on labelled queries; later requests use it and record its version."""
    from attribution_audit.attribution import AttributionParams
    from attribution_audit.calibrate import calibrate as run_calibration
    from attribution_audit.runtime import open_attributor

    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    with open_attributor(settings, engine, settings.embedder) as attributor:
        report = run_calibration(attributor, labelled, AttributionParams(k=k, verify="off"))
    auroc = "n/a" if report.auroc is None else f"{report.auroc:.3f}"
    typer.echo(
        f"stored {report.model_name}: {report.n_samples} labelled queries ({report.n_positive} correct), "
        f"training AUROC {auroc}, Brier {report.brier:.3f}"
    )


# -- audit -----------------------------------------------------------------------------------------------------
@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest requests.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent attribution requests, newest first."""
    from attribution_audit.audit.repository import list_attributions

    results = list_attributions(_checked_engine(ctx.obj), limit=limit)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in results], indent=2))
        return
    typer.echo(f"{'request_id':<36}  {'created_at':<25}  {'top artist':<24}  {'conf':>5}  image")
    for r in results:
        top = r.top_artist or "-"
        created = r.created_at.isoformat(timespec="seconds")
        typer.echo(f"{r.request_id:<36}  {created:<25}  {top:<24}  {r.confidence:>5.3f}  {r.image}")


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request id, as printed by attribute or audit list.")],
    as_json: JsonOption = False,
) -> None:
    """Show one recorded attribution with its neighbours, metrics and parameters."""
    from attribution_audit.audit.repository import get_attribution

    result = get_attribution(_checked_engine(ctx.obj), request_id)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    _print_attribution(result)
    typer.echo(f"  embedder {result.embedder_fingerprint}  catalogue version {result.catalogue_version}")
    typer.echo(f"  index {json.dumps(result.index_params, sort_keys=True)}")
    typer.echo(f"  parameters {json.dumps(result.parameters, sort_keys=True)}")
    typer.echo(f"  record hash {result.record_hash}")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="Verify an export (audit export) instead of the database.")
    ] = None,
) -> None:
    """Recompute the hash chain (of the database, or of an export file); exit 1 naming the first broken record."""
    from attribution_audit.audit.chain import verify_chain

    if file is not None:
        from attribution_audit.reporting.export import verify_export

        checked = verify_export(file)
        if not checked.ok:
            typer.echo(f"export BROKEN: {checked.problem}", err=True)
            raise typer.Exit(1)
        typer.echo(
            f"export OK: {checked.records} records (seq {checked.first_seq}..{checked.last_seq}), "
            f"last hash {checked.last_hash}"
        )
        return
    report = verify_chain(_checked_engine(ctx.obj))
    if not report.ok:
        typer.echo(
            f"chain BROKEN at seq {report.broken_seq} (request {report.broken_request_id}): {report.reason}; "
            f"{report.checked} records before it verify",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"chain OK: {report.checked} records, head {report.head_hash}")


@audit_app.command("verify-recall")
def audit_verify_recall(ctx: typer.Context) -> None:
    """Exact-check, in batch, past requests that were not verified when they ran (results in recall_checks)."""
    from attribution_audit.runtime import verify_recall_all

    summaries = verify_recall_all(ctx.obj, _checked_engine(ctx.obj))
    if not summaries:
        typer.echo("nothing to check: every request was verified")
    for name, summary in summaries.items():
        mean = "n/a" if summary.mean_overlap is None else f"{summary.mean_overlap:.4f}"
        typer.echo(f"{name}: {summary.checked} checked, mean overlap@K {mean}, {summary.below_one} below 1.0")


@audit_app.command("replay")
def audit_replay(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request to re-run on today's index.")],
    as_json: JsonOption = False,
) -> None:
    """Re-run a recorded request on today's index (logged as a replay) and print the differences."""
    from attribution_audit.attribution import diff_attributions
    from attribution_audit.runtime import replay

    before, after = replay(ctx.obj, _checked_engine(ctx.obj), request_id)
    differences = diff_attributions(before, after)
    if as_json:
        typer.echo(json.dumps({"original": before.as_json(), "replay": after.as_json(), "differences": differences}))
        return
    typer.echo(f"replay {after.request_id} of {before.request_id}")
    typer.echo("\n".join(differences) if differences else "no differences")


# -- evaluate --------------------------------------------------------------------------------------------------
QueriesArgument = Annotated[
    str, typer.Argument(help="Labelled queries: CSV (path,artist[,work_ids][,subset]) or a stored query set name.")
]


@evaluate_app.command("run")
def evaluate_run(
    ctx: typer.Context,
    queries: QueriesArgument,
    k_max: Annotated[int, typer.Option(min=1, help="Curves are computed for K = 1..k-max.")] = 100,
    k: Annotated[
        int, typer.Option("--k", min=1, help="Fixed K for Table 1 (when true works are unknown) and confidence.")
    ] = 10,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, CSV tables, report.md and plots.")] = Path(
        "evaluation"
    ),
    name: Annotated[str | None, typer.Option(help="Name of the query set (default: the file name).")] = None,
    space: Annotated[str, typer.Option(help="content | style | fused")] = "content",
    embedder: EmbedderOption = None,
) -> None:
    """Attribute every labelled query (logged, tagged with the run) and compute the note's metrics."""
    from attribution_audit.evaluation.report import write_outputs
    from attribution_audit.evaluation.run import import_query_set, run_evaluation
    from attribution_audit.runtime import open_attributor

    if k > k_max:
        raise typer.BadParameter(f"--k {k} is larger than --k-max {k_max}")
    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    query_set = import_query_set(engine, queries, name)
    with open_attributor(settings, engine, settings.embedder) as attributor:
        summary = _params(run_evaluation, attributor=attributor, query_set_id=query_set, k_max=k_max, k=k, space=space)
    write_outputs(summary.metrics, out)
    overall = summary.metrics["overall"]["curves"]
    typer.echo(
        f"evaluation run {summary.run_id}: {summary.queries} queries ({summary.failed} unreadable); hit rate@1 "
        f"{_num(overall[0]['hit_rate'])}, @{k} {_num(overall[min(k, k_max) - 1]['hit_rate'])}; results in {out}"
    )


@evaluate_app.command("compare-spaces")
def evaluate_compare_spaces(
    ctx: typer.Context,
    queries: QueriesArgument,
    k_max: Annotated[int, typer.Option(min=1, help="Curves are computed for K = 1..k-max.")] = 100,
    k: Annotated[int, typer.Option("--k", min=1, help="K of the side-by-side numbers.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write compare.json and compare.md here.")] = None,
    embedder: EmbedderOption = None,
) -> None:
    """Evaluate content, style and fused spaces on the same queries and print them side by side."""
    from attribution_audit.evaluation.run import compare_spaces, import_query_set
    from attribution_audit.reporting.queries import render_rows
    from attribution_audit.runtime import open_attributor

    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    query_set = import_query_set(engine, queries)
    with open_attributor(settings, engine, settings.embedder) as attributor:
        rows = compare_spaces(attributor, query_set, k_max=k_max, k=k)
    shown = [{key: _num(v) if isinstance(v, float) or v is None else v for key, v in row.items()} for row in rows]
    typer.echo(render_rows(shown, "table"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(rows, indent=2))
        table = render_rows(shown, "csv").splitlines()
        markdown = ["| " + " | ".join(line.split(",")) + " |" for line in table]
        markdown.insert(1, "|" + "---|" * len(table[0].split(",")))
        (out / "compare.md").write_text("\n".join(markdown) + "\n")
        typer.echo(f"written to {out}")


@evaluate_app.command("report")
def evaluate_report(
    ctx: typer.Context,
    run: Annotated[int, typer.Option("--run", help="Evaluation run id.")],
    out: Annotated[Path, typer.Option(help="Folder for the outputs.")] = Path("evaluation"),
) -> None:
    """Recompute a past run's metrics purely from the audit DB and write the same outputs."""
    from attribution_audit.evaluation.report import write_outputs
    from attribution_audit.evaluation.run import compute_metrics

    metrics = compute_metrics(_checked_engine(ctx.obj), run)
    write_outputs(metrics, out)
    typer.echo(f"evaluation run {run}: report written to {out}")


@evaluate_app.command("noise")
def evaluate_noise(
    ctx: typer.Context,
    queries: QueriesArgument,
    noise: Annotated[Path, typer.Option(help="Manifest (CSV/JSONL/folder) of the noise works to add.")],
    levels: Annotated[str, typer.Option(help="Noise levels as fractions of the index size.")] = "0.1,0.25,0.5,0.75",
    kind: Annotated[
        str, typer.Option(help="Label of the noise: homogeneous (same domain) or heterogeneous.")
    ] = "homogeneous",
    k: Annotated[int, typer.Option("--k", min=1, help="Attributed works per query.")] = 10,
    space: Annotated[str, typer.Option(help="content | style | fused")] = "content",
    out: Annotated[Path, typer.Option(help="Folder for noise.json, noise.csv and noise.png.")] = Path("evaluation"),
    embedder: EmbedderOption = None,
) -> None:
    """Add noise works to a scratch copy of the index and report the mean overlap with the clean attribution."""
    from attribution_audit.evaluation.noise import noise_experiment, write_noise_outputs
    from attribution_audit.evaluation.run import import_query_set
    from attribution_audit.runtime import open_attributor

    try:
        fractions = [float(v) for v in levels.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"levels {levels!r}: give fractions such as 0.1,0.25,0.5") from None
    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    query_set = import_query_set(engine, queries)
    with open_attributor(settings, engine, settings.embedder) as attributor:
        metrics = _params(
            lambda: noise_experiment(
                attributor,
                query_set,
                noise,
                levels=fractions,
                kind=kind,
                k=k,
                scratch_root=settings.data_dir,
                space=space,
            )
        )
    write_noise_outputs(metrics, out)
    for row in metrics["levels"]:
        typer.echo(
            f"{kind} {row['level']:.0%} ({row['noise_works']} works): mean overlap {_num(row['mean_overlap'])}, "
            f"noise in top {k} {_num(row['noise_in_top_k'])}"
        )
    typer.echo(f"noise run {metrics['run_id']}; results in {out}")


@evaluate_app.command("list")
def evaluate_list(ctx: typer.Context) -> None:
    """List evaluation runs."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from attribution_audit.audit.models import EvaluationRun

    with Session(_checked_engine(ctx.obj)) as session:
        for run in session.scalars(select(EvaluationRun).order_by(EvaluationRun.id)):
            typer.echo(f"{run.id}\t{run.kind}\t{run.status}\t{run.created_at:%Y-%m-%d %H:%M}\t{run.embedder_name}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# -- reports and exports ----------------------------------------------------------------------------------------
FromOption = Annotated[datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (UTC).")]
ToOption = Annotated[datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day (UTC), inclusive.")]


@report_app.command("artists")
def report_artists(
    ctx: typer.Context,
    date_from: FromOption = None,
    date_to: ToOption = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Shares per artist over a period: attributions, sum of shares, mean confidence (production requests)."""
    from attribution_audit.reporting.queries import ARTIST_COLUMNS, OUTPUT_FORMATS, artist_shares, render_rows

    if fmt not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"format {fmt!r}: choose table, csv or json")
    rows = artist_shares(
        _checked_engine(ctx.obj), date_from.date() if date_from else None, date_to.date() if date_to else None
    )
    typer.echo(render_rows(rows, fmt, ARTIST_COLUMNS))


@report_app.command("summary")
def report_summary(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Counts, confidence distribution, HNSW/exact disagreements and the chain status."""
    from attribution_audit.reporting.queries import summary

    data = summary(_checked_engine(ctx.obj))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    chain = data["chain"]
    typer.echo(
        f"requests {data['requests']} ({data['production_requests']} production), "
        f"verified {data['verified_requests']}, HNSW/exact disagreements {data['ann_disagreements']}, "
        f"low confidence {data['low_confidence_requests']}"
    )
    typer.echo(
        f"mean confidence {data['mean_confidence']}, works {data['active_works']} active / "
        f"{data['withdrawn_works']} withdrawn"
    )
    for bucket in data["confidence_distribution"]:
        typer.echo(f"  confidence {bucket['from']:.1f}-{bucket['to']:.1f}: {bucket['requests']}")
    state = "OK" if chain["ok"] else f"BROKEN at seq {chain['broken_seq']} ({chain['reason']})"
    typer.echo(f"chain {state}: {chain['records']} records, head {chain['head_hash']}")


@report_app.command("request")
def report_request(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request to report.")],
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page here.")] = None,
    pdf_out: Annotated[Path | None, typer.Option("--pdf", help="Also print it to PDF (needs Chromium).")] = None,
) -> None:
    """One attribution as a self-contained HTML page (and PDF): image, ranked neighbours, shares, indicators, hash."""
    from attribution_audit.reporting.html import write_request_html, write_request_pdf

    if html_out is None and pdf_out is None:
        raise typer.BadParameter("give --html OUT.html and/or --pdf OUT.pdf")
    engine = _checked_engine(ctx.obj)
    for path in (
        write_request_html(engine, request_id, html_out) if html_out else None,
        write_request_pdf(engine, request_id, pdf_out) if pdf_out else None,
    ):
        if path is not None:
            typer.echo(f"wrote {path}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output file (JSON lines).")],
    date_from: FromOption = None,
    date_to: ToOption = None,
) -> None:
    """Export a period's audit records with their hashes and the chain head (check with audit verify --file)."""
    from attribution_audit.reporting.export import export_records

    count = export_records(
        _checked_engine(ctx.obj), out, date_from.date() if date_from else None, date_to.date() if date_to else None
    )
    typer.echo(f"exported {count} records to {out}")


@db_app.command("grant-reader")
def db_grant_reader(
    ctx: typer.Context, role: Annotated[str, typer.Argument(help="PostgreSQL role to create or update.")]
) -> None:
    """Give a PostgreSQL role read access to the reporting views and nothing else."""
    from attribution_audit.reporting.roles import grant_reader

    grant_reader(_checked_engine(ctx.obj), role)
    typer.echo(f"role {role} can read the reporting views (and nothing else); grant it to login users")
