"""``attribution-audit audit``: read, verify, replay and export the audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from attribution_audit.cli.common import (
    NEIGHBOUR_COLUMNS,
    FormatOption,
    FromOption,
    JsonOption,
    OutputFormat,
    RequestIdArgument,
    RequestKind,
    ToOption,
    Typer,
    audit_of,
    choice,
    day_range,
    emit,
    flat_row,
    neighbour_rows,
    output_format,
    print_attribution,
    records,
    request_id_of,
    say_signed,
)
from attribution_audit.domain.params import MAX_LISTED
from attribution_audit.reporting.tables import render_json, terminal_text

app = Typer(
    help="Read the audit log.\n\n\b\nExample: attribution-audit audit list --limit 5",
)

LIST_COLUMNS = (
    "request_id",
    "created_at",
    "top_artist",
    "confidence",
    "image",
    "intact",
    "evaluation_run",
    "replay_of",
    "one_colour",
)


@app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LISTED, help="How many of the newest requests.")] = 50,
    kind: Annotated[
        RequestKind,
        typer.Option(
            "--kind",
            parser=choice(RequestKind, "kind"),
            help="Which requests: all, production (users' attributions: not made by an evaluation run, not "
            "replays, as report summary counts them), evaluation (made by evaluate runs) or replay (audit replay).",
        ),
    ] = RequestKind.all,
    fmt: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
) -> None:
    """List recent attribution requests, newest first (JSON: the whole records, as audit show prints them); intact
    is false for a record that no longer matches its record hash; evaluation_run names the evaluation run that made a
    request (evaluate ...), replay_of the request an audit replay re-ran; each empty for the others; one_colour is
    yes (true) for an image of one colour, whose nearest works share only that colour, n/a (null) where the image was
    not looked at (requests made before revision 0024, evaluation runs).

    \b
    Example: attribution-audit audit list --limit 4 --kind production --format csv
    """
    from attribution_audit.services.audit_log import list_attributions

    results = list_attributions(audit_of(ctx.obj), limit=limit, kind=kind.value)
    rows = [
        {
            "request_id": r.request_id,
            "created_at": r.created_at,
            "top_artist": r.top_artist,
            "confidence": r.confidence,
            "image": r.image,
            "evaluation_run": r.evaluation_run_id,
            "intact": r.intact,
            "replay_of": r.replay_of,
            "one_colour": r.one_colour,
        }
        for r in results
    ]
    emit(
        output_format(fmt, as_json),
        data=[r.as_json() for r in results],
        rows=rows,
        shown=[
            {
                **row,
                "confidence": f"{row['confidence']:.3f}",
                "intact": "yes" if row["intact"] else "NO: hash fails",
                "evaluation_run": row["evaluation_run"] or "",
                "replay_of": row["replay_of"] or "",
                "one_colour": "n/a" if row["one_colour"] is None else "yes" if row["one_colour"] else "",
            }
            for row in rows
        ],
        columns=LIST_COLUMNS,
    )


@app.command("show")
def audit_show(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    fmt: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
) -> None:
    """Show one recorded attribution with its neighbours, metrics and parameters, and the notes its page shows (CSV:
    one row per neighbour).

    \b
    Example: attribution-audit audit show "$(attribution-audit audit list --limit 1 --format csv | tail -n 1 | cut -d, -f1)"
    """  # noqa: E501 (the example is one line, to paste)
    from attribution_audit.services.audit_log import get_attribution, request_notes

    audit = audit_of(ctx.obj)
    result = get_attribution(audit, request_id_of(audit, request_id))
    notes = request_notes(audit, result)

    def text() -> None:
        print_attribution(result)
        asked = f"requested by {terminal_text(result.requester)} at {result.created_at.isoformat()}"
        typer.echo(f"  {asked}  image sha256 {result.image_sha256}")
        typer.echo(f"  embedder {result.embedder_fingerprint}  catalogue version {result.catalogue_version}")
        typer.echo(f"  index {json.dumps(result.index_params, sort_keys=True)}")
        typer.echo(f"  parameters {json.dumps(result.parameters, sort_keys=True)}")
        typer.echo(f"  previous hash {result.prev_hash}  record hash {result.record_hash}")
        for n in result.neighbours:
            pinned = n.image_sha256 or "not pinned (recorded before revision 0015)"
            typer.echo(f"  rank {n.rank} image sha256 {terminal_text(pinned)}")
        for note in notes[1:] if result.one_colour else notes:  # (the first: the ONE COLOUR line above says it)
            typer.echo(f"  note: {terminal_text(note)}")

    emit(
        output_format(fmt, as_json),
        data=result.as_json() | {"notes": notes},
        rows=neighbour_rows(result),
        columns=NEIGHBOUR_COLUMNS,
        text=text,
    )


CheckpointFileOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Also check against these checkpoints (a file from audit checkpoint --out, or a witness file); "
        "default: the witness file's last checkpoint, if any.",
    ),
]


WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Processes reading, encoding and hashing the log's blocks (the links are checked in order here); "
        "1 reads it in this process. Default: the number of CPUs.",
    ),
]


def _workers(workers: int | None) -> int:
    return workers if workers is not None else os.cpu_count() or 1


PublicKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The checkpoints must be signed by this public key (a PEM file from audit public-key): for auditors "
        "without the private key; default: the installation's checkpoint key, if present.",
    ),
]


def _say_checkpoints(checks: list[Any], table: bool) -> bool:
    """Print each checkpoint's outcome (problems on stderr, agreements in table format); whether all agree."""
    for check in checks:
        c = check.checkpoint
        if check.problem:
            typer.echo(f"checkpoint seq {c.seq} of {c.time} (key {c.key_fingerprint}) FAILS: {check.problem}", err=True)
        elif table:
            unchecked = (
                "" if check.signer_checked else " (signer not checked: no checkpoint key here; pass --public-key)"
            )
            typer.echo(f"checkpoint seq {c.seq} of {c.time} (key {c.key_fingerprint}) holds{unchecked}")
    return all(check.problem is None for check in checks)


@app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="Verify an export (audit export) instead of the database.")
    ] = None,
    checkpoint: CheckpointFileOption = None,
    public_key: PublicKeyOption = None,
    workers: WorkersOption = None,
    fmt: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
) -> None:
    """Recompute the hash chain (of the database, or of an export file) and compare it with signed checkpoints, and
    the database's views and triggers with what its migrations create, each stored confidence model with the
    fingerprint and the parameters of the records it scored (models) and the learned space versions records name
    (spaces); exit 1 naming the first broken record, the checkpoint it contradicts (records removed, changed,
    reordered, another audit DB, or signed by another key), the view or trigger that was changed, the confidence
    model or the space version changed since records used it; their OK lines say how many were compared, or that
    no record names one. A db grant-reader role may not read the stored models and versions: where records name
    some, its models and spaces checks say UNCHECKED (not OK; JSON ok null) and who can run them. The chain's
    outcome is recorded for report summary; where it cannot be (a db grant-reader role, a read-only log, a full disk)
    it is not, with a warning, and the verdict and exit code are the same.

    \b
    Example: attribution-audit audit verify --format json
    """
    from attribution_audit.services.checkpoints import verify_database, verify_export

    fmt = output_format(fmt, as_json)
    table = fmt is OutputFormat.table
    data: dict[str, Any]
    if file is not None:
        checked, checks = verify_export(ctx.obj, file, checkpoint, public_key)
        data = {
            "ok": checked.ok and all(c.problem is None for c in checks),
            "records": checked.records,
            "first_seq": checked.first_seq,
            "last_seq": checked.last_seq,
            "last_hash": checked.last_hash,
            "problem": checked.problem,
            "checkpoints": [check.as_json() for check in checks],
        }
        if not table:
            emit(fmt, data=data, rows=[flat_row(data)])
        if not checked.ok:
            typer.echo(f"export BROKEN: {checked.problem}", err=True)
            raise typer.Exit(1)
        if table:
            span = f" (seq {checked.first_seq}..{checked.last_seq}), last hash {checked.last_hash}"
            typer.echo(f"export OK: {checked.records} records{span if checked.records else ''}")
        if not _say_checkpoints(checks, table):
            raise typer.Exit(1)
        return
    verification = verify_database(ctx.obj, audit_of(ctx.obj), checkpoint, public_key, _workers(workers))
    report = verification.report
    if not table:
        emit(fmt, data=verification.as_json(), rows=[flat_row(verification.as_json())])
    if not report.ok:
        typer.echo(
            f"chain BROKEN{report.located}: {report.reason}; "
            f"{report.checked} records {'before it ' if report.located else ''}verify",
            err=True,
        )
    elif table:
        typer.echo(f"chain OK: {records(report.checked)}, head {report.head_hash}")
    _say_checkpoints(verification.checkpoints, table)
    if verification.schema_problem:
        typer.echo(f"schema FAILS: {verification.schema_problem}", err=True)
    elif table:
        typer.echo("schema OK: every view and trigger is as the migrations create it")
    for line, failed in verification.check_lines():
        if failed or table:
            typer.echo(line, err=failed)
    if table and checkpoint is None and not ctx.obj.resolved_witness_file.exists():
        # the chain alone cannot show a cut tail: say that no checkpoint was compared (a mistyped path, say)
        typer.echo(
            f"no checkpoint compared: no witness file at {ctx.obj.resolved_witness_file} (`audit checkpoint` signs "
            "one; set ATTRIBUTION_AUDIT_WITNESS_FILE if yours is elsewhere)"
        )
    if verification.not_recorded:
        typer.echo(f"warning: {verification.not_recorded}", err=True)
    if not verification.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the checkpoint to this file (a new one: an existing file is refused without --force).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --out file if it exists (refused without).")
    ] = False,
) -> None:
    """Verify the chain, then sign its head (seq, head hash, time, audit DB identity) with the checkpoint key and
    append it to the witness file; the key is created on first use (its path is printed on stderr). An existing
    --out file is refused without --force before anything is signed; the file is written whole or not at all.

    \b
    Example: attribution-audit audit checkpoint --out .demo/checkpoint.json
    """
    from attribution_audit.services.checkpoints import write_checkpoint
    from attribution_audit.services.outputs import refuse_evidence_as_output

    if out is not None:
        refuse_evidence_as_output(ctx.obj, out, "--out")
    signed = write_checkpoint(ctx.obj, audit_of(ctx.obj), out, overwrite=force)
    say_signed(signed)
    typer.echo(signed.checkpoint.line())


@app.command("public-key")
def audit_public_key(ctx: typer.Context) -> None:
    """Print the public key of the checkpoint key (PEM), to hand to auditors: with it and a checkpoint, they check
    the log or an export without the private key (audit verify --public-key FILE).

    \b
    Example: attribution-audit audit public-key
    """
    from attribution_audit.services.checkpoints import public_key_pem

    typer.echo(public_key_pem(ctx.obj), nl=False)


@app.command("verify-recall")
def audit_verify_recall(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Exact-check, in batch, past requests that were not verified when they ran (results in recall_checks);
    those whose collection changed since they ran (an ingest, a withdrawal) cannot be checked and are counted apart
    (changed).

    \b
    Example: attribution-audit audit verify-recall --format json
    """
    from attribution_audit.services.recall import verify_recall_all

    summaries = verify_recall_all(ctx.obj, audit_of(ctx.obj))
    rows = [
        {
            "embedder": name,
            "checked": s.checked,
            "mean_overlap": s.mean_overlap,
            "below_one": s.below_one,
            "changed": s.changed,
        }
        for name, s in summaries.items()
    ]

    def text() -> None:
        if not summaries:
            typer.echo("nothing to check: every request was verified")
        for name, summary in summaries.items():
            mean = "n/a" if summary.mean_overlap is None else f"{summary.mean_overlap:.4f}"
            changed = (
                f"; {summary.changed} not checked: the collection changed since they ran (`audit replay ID` "
                "re-runs one on today's index)"
                if summary.changed
                else ""
            )
            typer.echo(
                f"{name}: {summary.checked} checked, mean overlap@K {mean}, {summary.below_one} below 1.0{changed}"
            )

    emit(fmt, data=rows, rows=rows, columns=("embedder", "checked", "mean_overlap", "below_one", "changed"), text=text)


@app.command("replay")
def audit_replay(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    fmt: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
) -> None:
    """Re-run a recorded request on today's index (logged as a replay) and print the differences, then any later
    indicator the record holds as null and the replay measures (CSV: one row per line).

    \b
    Example: attribution-audit audit replay "$(attribution-audit audit list --limit 1 --format csv | tail -n 1 | cut -d, -f1)"
    """  # noqa: E501 (the example is one line, to paste)
    from attribution_audit.domain.results import diff_attributions
    from attribution_audit.services.recall import replay

    fmt = output_format(fmt, as_json)
    audit = audit_of(ctx.obj)
    before, after = replay(ctx.obj, audit, request_id_of(audit, request_id))
    diff = diff_attributions(before, after)
    if fmt is OutputFormat.json:  # on one line, as it always was; not_recorded and verdict added since
        data = {
            "original": before.as_json(),
            "replay": after.as_json(),
            "differences": diff.changed,
            "not_recorded": diff.not_recorded_lines,
            "verdict": diff.verdict,
        }
        typer.echo(render_json(data, indent=None))
        return

    def text() -> None:
        typer.echo(f"replay {after.request_id} of {before.request_id}")
        if before.intact is False:
            typer.echo(
                "NOT INTACT: the original no longer matches its record hash (changed after it was written); run "
                "`attribution-audit audit verify`"
            )
        typer.echo("\n".join([*diff.lines, diff.verdict]))

    rows = [{"request_id": after.request_id, "replay_of": before.request_id, "difference": d} for d in diff.lines]
    emit(fmt, data=None, rows=rows, columns=("request_id", "replay_of", "difference"), text=text)


@app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output file (JSON lines).")],
    date_from: FromOption = None,
    date_to: ToOption = None,
    workers: WorkersOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists (refused without).")] = False,
) -> None:
    """Export a period's audit records with their hashes and the chain head (check with audit verify --file). The
    whole chain is verified in the same pass, and recorded for report summary as audit verify records it (where it
    cannot be, with a warning).

    \b
    Example: attribution-audit audit export .demo/audit-export.jsonl --from 2024-01-01
    """
    from attribution_audit.services.audit_log import export_records
    from attribution_audit.services.outputs import refuse_evidence_as_output

    refuse_evidence_as_output(ctx.obj, out, "OUT")
    count, not_recorded = export_records(
        audit_of(ctx.obj),
        out,
        *day_range(date_from, date_to),
        _workers(workers),
        overwrite=force,
    )
    typer.echo(f"exported {records(count)} to {out}")
    if not_recorded:
        typer.echo(f"warning: {not_recorded}", err=True)
