"""``attribution-audit audit``: read, verify, replay and export the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli.common import FromOption, JsonOption, ToOption, audit_of, print_attribution, print_json

app = typer.Typer(no_args_is_help=True, help="Read the audit log.")


@app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest requests.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent attribution requests, newest first."""
    from attribution_audit.services.audit_log import list_attributions

    results = list_attributions(audit_of(ctx.obj), limit=limit)
    if as_json:
        print_json([r.as_json() for r in results])
        return
    typer.echo(f"{'request_id':<36}  {'created_at':<25}  {'top artist':<24}  {'conf':>5}  image")
    for r in results:
        top = r.top_artist or "-"
        created = r.created_at.isoformat(timespec="seconds")
        typer.echo(f"{r.request_id:<36}  {created:<25}  {top:<24}  {r.confidence:>5.3f}  {r.image}")


@app.command("show")
def audit_show(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request id, as printed by attribute or audit list.")],
    as_json: JsonOption = False,
) -> None:
    """Show one recorded attribution with its neighbours, metrics and parameters."""
    from attribution_audit.services.audit_log import get_attribution

    result = get_attribution(audit_of(ctx.obj), request_id)
    if as_json:
        print_json(result.as_json())
        return
    print_attribution(result)
    typer.echo(f"  embedder {result.embedder_fingerprint}  catalogue version {result.catalogue_version}")
    typer.echo(f"  index {json.dumps(result.index_params, sort_keys=True)}")
    typer.echo(f"  parameters {json.dumps(result.parameters, sort_keys=True)}")
    typer.echo(f"  record hash {result.record_hash}")


@app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="Verify an export (audit export) instead of the database.")
    ] = None,
) -> None:
    """Recompute the hash chain (of the database, or of an export file); exit 1 naming the first broken record."""
    from attribution_audit.services.audit_log import verify_chain, verify_export

    if file is not None:
        checked = verify_export(file)
        if not checked.ok:
            typer.echo(f"export BROKEN: {checked.problem}", err=True)
            raise typer.Exit(1)
        typer.echo(
            f"export OK: {checked.records} records (seq {checked.first_seq}..{checked.last_seq}), "
            f"last hash {checked.last_hash}"
        )
        return
    report = verify_chain(audit_of(ctx.obj))
    if not report.ok:
        typer.echo(
            f"chain BROKEN at seq {report.broken_seq} (request {report.broken_request_id}): {report.reason}; "
            f"{report.checked} records before it verify",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"chain OK: {report.checked} records, head {report.head_hash}")


@app.command("verify-recall")
def audit_verify_recall(ctx: typer.Context) -> None:
    """Exact-check, in batch, past requests that were not verified when they ran (results in recall_checks)."""
    from attribution_audit.services.recall import verify_recall_all

    summaries = verify_recall_all(ctx.obj, audit_of(ctx.obj))
    if not summaries:
        typer.echo("nothing to check: every request was verified")
    for name, summary in summaries.items():
        mean = "n/a" if summary.mean_overlap is None else f"{summary.mean_overlap:.4f}"
        typer.echo(f"{name}: {summary.checked} checked, mean overlap@K {mean}, {summary.below_one} below 1.0")


@app.command("replay")
def audit_replay(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request to re-run on today's index.")],
    as_json: JsonOption = False,
) -> None:
    """Re-run a recorded request on today's index (logged as a replay) and print the differences."""
    from attribution_audit.domain.results import diff_attributions
    from attribution_audit.services.recall import replay

    before, after = replay(ctx.obj, audit_of(ctx.obj), request_id)
    differences = diff_attributions(before, after)
    if as_json:
        typer.echo(json.dumps({"original": before.as_json(), "replay": after.as_json(), "differences": differences}))
        return
    typer.echo(f"replay {after.request_id} of {before.request_id}")
    typer.echo("\n".join(differences) if differences else "no differences")


@app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output file (JSON lines).")],
    date_from: FromOption = None,
    date_to: ToOption = None,
) -> None:
    """Export a period's audit records with their hashes and the chain head (check with audit verify --file)."""
    from attribution_audit.services.audit_log import export_records

    count = export_records(
        audit_of(ctx.obj), out, date_from.date() if date_from else None, date_to.date() if date_to else None
    )
    typer.echo(f"exported {count} records to {out}")
