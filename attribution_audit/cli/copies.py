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
        typer.Argument(
            help="Labelled CSV(s): rows with work_ids are copies of their first work, rows without not (a relative "
            "path is read from the CSV's folder)."
        ),
    ],
    space: SpaceOption = "content",
    depth: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Candidate works from each base space (default: ATTRIBUTION_AUDIT_COPY_DEPTH, else 40).",
        ),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
    embedder: EmbedderOption = None,
) -> None:
    """Run the copy stage (ORB + RANSAC homography, then the aligned images' correlation, over the first works of
    every base space) on labelled queries, not logged: recall@1 on the copies (the named work is the source), per
    subset (edit), false copy flags on the others with the rate's 95 % upper bound, the margin of the scores to the
    threshold, and the checks that could not run.

    \b
    Example: attribution-audit evaluate copies .demo/catalogue/queries.csv
    """
    from attribution_audit.services.copies import evaluate_copies as run

    settings = settings_of(ctx, embedder)
    result = run(settings, audit_of(settings), labelled, space=space, depth=depth)
    rows = [
        {"queries": "copies", "count": result.copies, "rate": result.recall_at_1, "measure": "recall@1"},
        {"queries": "non-copies", "count": result.non_copies, "rate": result.false_copy_rate, "measure": "false copy"},
        {
            "queries": "non-copies",
            "count": result.non_copies,
            "rate": result.false_copy_rate_upper_95,
            "measure": "false copy, 95 % upper bound",
        },
        *(
            {
                "queries": f"copies: {subset or '-'}",
                "count": result.copies_by_subset.get(subset),
                "rate": rate,
                "measure": "recall@1",
            }
            for subset, rate in result.recall_by_subset.items()
        ),
    ]

    def text() -> None:
        not_run = ", ".join(f"{count} {status}" for status, count in sorted(result.not_run.items())) or "0"
        if result.first_not_run:
            not_run += f", counted as misses and non-flags (the first: {result.first_not_run})"
        typer.echo(
            f"copies: recall@1 {num(result.recall_at_1)} ({result.copies}); non-copies: false copy rate "
            f"{num(result.false_copy_rate)} ({result.false_copies} of {result.non_copies}, 95 % upper bound "
            f"{num(result.false_copy_rate_upper_95)}); checks that could not run: {not_run}"
        )
        if any(result.recall_by_subset):  # no subset column: the overall line says it all
            for subset, rate in result.recall_by_subset.items():
                typer.echo(f"  {subset or '-'}: recall@1 {num(rate)} ({result.copies_by_subset.get(subset)})")
        seconds = "n/a" if result.check_seconds is None else f"{result.check_seconds * 1000:.0f} ms"
        layouts = (
            f"and {result.layout_depth} by layout ({result.laid_out} of {result.points} works have one)"
            if result.layout_depth
            else "(none by layout: the collection holds no layouts, see README, Copy detection)"
            if result.depth
            else ""
        )
        typer.echo(
            f"rule {result.method}: a copy scores {result.threshold:g} or more (non-copies: highest "
            f"{num(result.non_copy_score_max)}, 99th percentile {num(result.non_copy_score_p99)}; copies named: "
            f"lowest {num(result.copy_score_min)}); {result.depth} candidates from each base space {layouts}; "
            f"{seconds} per check"
        )

    emit(fmt, data=asdict(result), rows=rows, text=text)
