"""``attribution-audit report``: shares per artist, a summary of the log, one request as a page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli.common import FromOption, JsonOption, ToOption, audit_of, print_json

app = typer.Typer(no_args_is_help=True, help="Reports for compliance officers and analysts.")


@app.command("artists")
def report_artists(
    ctx: typer.Context,
    date_from: FromOption = None,
    date_to: ToOption = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Shares per artist over a period: attributions, sum of shares, mean confidence (production requests)."""
    from attribution_audit.reporting.tables import OUTPUT_FORMATS, render_rows
    from attribution_audit.services.report import ARTIST_COLUMNS, artist_shares

    if fmt not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"format {fmt!r}: choose table, csv or json")
    rows = artist_shares(
        audit_of(ctx.obj), date_from.date() if date_from else None, date_to.date() if date_to else None
    )
    typer.echo(render_rows(rows, fmt, ARTIST_COLUMNS))


@app.command("summary")
def report_summary(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Counts, confidence distribution, HNSW/exact disagreements and the chain status."""
    from attribution_audit.services.report import summary

    data = summary(audit_of(ctx.obj))
    if as_json:
        print_json(data)
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


@app.command("request")
def report_request(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request to report.")],
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page here.")] = None,
    pdf_out: Annotated[Path | None, typer.Option("--pdf", help="Also print it to PDF (needs Chromium).")] = None,
) -> None:
    """One attribution as a self-contained HTML page (and PDF): image, ranked neighbours, shares, indicators, hash."""
    from attribution_audit.services.audit_log import write_request_html, write_request_pdf

    if html_out is None and pdf_out is None:
        raise typer.BadParameter("give --html OUT.html and/or --pdf OUT.pdf")
    audit = audit_of(ctx.obj)
    for path in (
        write_request_html(audit, request_id, html_out) if html_out else None,
        write_request_pdf(audit, request_id, pdf_out) if pdf_out else None,
    ):
        if path is not None:
            typer.echo(f"wrote {path}")
