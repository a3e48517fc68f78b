"""``attribution-audit report``: shares per artist, a summary of the log, one request as a page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from attribution_audit.cli.common import (
    FormatOption,
    FromOption,
    JsonOption,
    OutputFormat,
    RequestIdArgument,
    ToOption,
    Typer,
    audit_of,
    day_range,
    emit,
    flat_row,
    output_format,
    records,
    request_id_of,
)

app = Typer(
    help="Reports for compliance officers and analysts.\n\n\b\nExample: attribution-audit report summary",
)


@app.command("artists")
def report_artists(
    ctx: typer.Context,
    date_from: FromOption = None,
    date_to: ToOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Shares per artist over a period (production requests, images of one colour left out: a note on stderr counts
    them): attributions (requests whose K works include the artist's, not only as top artist), the sum of the
    artist's shares in them, and their mean confidence.

    \b
    Example: attribution-audit report artists --from 2024-01-01 --format csv
    """
    from attribution_audit.services.report import ARTIST_COLUMNS, artist_shares, one_colour_left_out

    audit, period = audit_of(ctx.obj), day_range(date_from, date_to)
    rows = artist_shares(audit, *period)
    emit(fmt, data=rows, rows=rows, columns=ARTIST_COLUMNS)
    if fmt == OutputFormat.table and rows:
        typer.echo(
            "attributions: requests with one of the artist's works among their K neighbours (as top artist or "
            "not); share_sum: the artist's shares summed over them (its expected number of attributions)",
            err=True,
        )
    if left_out := one_colour_left_out(audit, *period):
        typer.echo(
            f"note: {left_out} production request(s) of images of one colour are left out (their nearest works share "
            "only that colour; report summary counts them)",
            err=True,
        )


def _summary_row(data: dict[str, Any]) -> dict[str, Any]:
    """The summary as one CSV row: the distribution and the checks spread over columns."""
    row = flat_row({key: value for key, value in data.items() if key != "confidence_distribution"})
    for bucket in data["confidence_distribution"]:
        row[f"confidence_{bucket['from']:.1f}-{bucket['to']:.1f}"] = bucket["requests"]
    return row


@app.command("summary")
def report_summary(ctx: typer.Context, fmt: FormatOption = OutputFormat.table, as_json: JsonOption = False) -> None:
    """Counts, confidence distribution, HNSW/exact disagreements, the requests of images of one colour (and the
    production ones made before revision 0024, not looked at for it), the chain status and the schema's (views and
    triggers as the migrations create them).

    \b
    Example: attribution-audit report summary --format json
    """
    from attribution_audit.domain.confidence import LOW_CONFIDENCE
    from attribution_audit.services.checkpoints import check_lines
    from attribution_audit.services.report import summary

    data = summary(audit_of(ctx.obj))

    def text() -> None:
        chain = data["chain"]
        typer.echo(
            f"requests {data['requests']} ({data['production_requests']} production), "
            f"exact-checked {data['verified_requests']}, HNSW/exact disagreements {data['ann_disagreements']}, "
            f"low confidence (< {LOW_CONFIDENCE}, or of one colour) {data['low_confidence_requests']}"
        )
        if data["one_colour_requests"]:
            typer.echo(
                f"requests of images of one colour {data['one_colour_requests']} (blocked or blank outputs? left out "
                "of the artist shares: their nearest works share only that colour)"
            )
        if unchecked := data["production_not_looked_at_for_one_colour"]:
            typer.echo(
                f"production requests not looked at for one colour {unchecked} (made before revision 0024: in the "
                "artist shares whatever their image)"
            )
        typer.echo(
            f"mean confidence of all {data['requests']} requests {data['mean_confidence']} (evaluation runs' and "
            f"replays too; the artist report's is of production requests), works {data['active_works']} active / "
            f"{data['withdrawn_works']} withdrawn"
        )
        for bucket in data["confidence_distribution"]:
            typer.echo(f"  confidence {bucket['from']:.1f}-{bucket['to']:.1f}: {bucket['requests']}")
        schema = data["schema"]
        if schema["ok"]:
            typer.echo("schema OK: every view and trigger is as the migrations create it")
        for problem in schema["problems"] or ([f"not checked: {schema['unchecked']}"] if schema["unchecked"] else []):
            typer.echo(f"schema FAILS: {problem}")
        for check in ("models", "spaces"):
            verdict = data[check]
            for line, _ in check_lines(check, verdict["problems"], verdict["unchecked"], verdict["checked"]):
                typer.echo(line)
        if chain["verified_in_full_at"] is None:
            typer.echo(
                f"chain checked in full now ({chain['checked_now']} records); an `audit verify` by a writer records a "
                "check to start from (a `db grant-reader` role neither records nor reads them)"
            )
        else:
            typer.echo(
                f"chain verified in full at {chain['verified_in_full_at']} ({chain['verified_in_full_age_s']} s ago) "
                f"up to seq {chain['verified_in_full_records']}, head {chain['verified_in_full_head_hash']}; "
                f"{chain['checked_now']} record{'' if chain['checked_now'] == 1 else 's'} appended since, checked now"
            )
            if chain["ok"] and (older := chain["records"] - chain["checked_now"]) > 0:
                typer.echo(
                    f"  {'record 1 was' if older == 1 else f'records 1-{older} were'} not read again: a change "
                    "since is found only by the next `audit verify` (that verification is a row of this audit DB: "
                    "whoever can write the DB can write it)"
                )
        if chain["ok"]:
            typer.echo(f"chain OK: {records(chain['records'])}, head {chain['head_hash']}")
        else:  # records and head are those verified before the break, not the log's
            where = "" if chain["broken_seq"] is None else f" at seq {chain['broken_seq']}"
            typer.echo(
                f"chain BROKEN{where} ({chain['reason']}): {chain['records']} records verify before it; "
                "`attribution-audit audit verify` names the record"
            )

    emit(output_format(fmt, as_json), data=data, rows=[_summary_row(data)], text=text)


@app.command("request")
def report_request(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page here.")] = None,
    pdf_out: Annotated[Path | None, typer.Option("--pdf", help="Also print it to PDF (needs Chromium).")] = None,
) -> None:
    """One attribution as a self-contained HTML page (and PDF): image, ranked neighbours, shares, indicators, hash.

    \b
    Example: attribution-audit report request "$(attribution-audit audit list --limit 1 --format csv | tail -n 1 | cut -d, -f1)" --html .demo/request.html
    """  # noqa: E501 (the example is one line, to paste)
    from attribution_audit.services.audit_log import write_request_html, write_request_pdf
    from attribution_audit.services.outputs import refuse_evidence_as_output

    if html_out is None and pdf_out is None:
        raise typer.BadParameter("give --html OUT.html and/or --pdf OUT.pdf")
    for option, out in (("--html", html_out), ("--pdf", pdf_out)):
        if out is not None:
            refuse_evidence_as_output(ctx.obj, out, option)
    audit = audit_of(ctx.obj)
    request_id = request_id_of(audit, request_id)
    for path in (
        write_request_html(audit, request_id, html_out) if html_out else None,
        write_request_pdf(audit, request_id, pdf_out) if pdf_out else None,
    ):
        if path is not None:
            typer.echo(f"wrote {path}")
