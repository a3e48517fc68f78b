"""``attribution-audit evaluate copies``: recall@1 and false-copy rate of the copy-detection stage."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli.common import (
    EmbedderOption,
    FormatOption,
    OutputFormat,
    SpaceOption,
    audit_of,
    emit,
    num,
    settings_of,
)


def evaluate_copies(
    ctx: typer.Context,
    labelled: Annotated[
        list[Path],
        typer.Argument(help="Labelled CSV(s): rows with work_ids are copies of their first work, rows without not."),
    ],
    space: SpaceOption = "content",
    fmt: FormatOption = OutputFormat.table,
    embedder: EmbedderOption = None,
) -> None:
    """Run the copy stage (ORB + RANSAC over the first 10 works) on labelled queries, not logged: recall@1 on the
    copies (the named work is the source), false copy flags on the others.

    \b
    Example: attribution-audit evaluate copies .demo/catalogue/queries.csv
    """
    from attribution_audit.services.copies import evaluate_copies as run

    settings = settings_of(ctx, embedder)
    result = run(settings, audit_of(settings), labelled, space=space)
    rows = [
        {"queries": "copies", "count": result.copies, "rate": result.recall_at_1, "measure": "recall@1"},
        {"queries": "non-copies", "count": result.non_copies, "rate": result.false_copy_rate, "measure": "false copy"},
        *(
            {"queries": f"copies: {subset or '-'}", "count": None, "rate": rate, "measure": "recall@1"}
            for subset, rate in result.recall_by_subset.items()
        ),
    ]

    def text() -> None:
        typer.echo(
            f"copies: recall@1 {num(result.recall_at_1)} ({result.copies}); non-copies: false copy rate "
            f"{num(result.false_copy_rate)} ({result.non_copies}); a copy scores {result.threshold:g} or more"
        )
        if any(result.recall_by_subset):  # no subset column: the overall line says it all
            for subset, rate in result.recall_by_subset.items():
                typer.echo(f"  {subset or '-'}: recall@1 {num(rate)}")

    emit(fmt, data=asdict(result), rows=rows, text=text)
