"""The SQL of the reporting views that a later revision defines again: ``v_artist_shares`` and ``v_low_confidence``
(revision 0003; 0024 leaves the requests of images of one colour out of the artist shares and counts them as low
confidence), and the canonical artist name every reporting view reads (docs/schema.md). For the migrations only:
a revision's views are the SQL these return for its flags."""

from __future__ import annotations

# The threshold v_low_confidence was created with (0003; 0024 kept it): a revision's view does not change with the
# code. The reports' threshold (domain.confidence.LOW_CONFIDENCE) is this one; another one needs a revision that
# defines the view again.
VIEW_LOW_CONFIDENCE = 0.5


def canonical(column: str, alias: str) -> str:
    """SQL for the canonical name of the artist named by ``column`` (itself when not merged)."""
    return (
        f"COALESCE((SELECT c.name FROM artists a_{alias} JOIN artists c ON c.id = a_{alias}.canonical_id "
        f"WHERE a_{alias}.name = {column}), {column})"
    )


def _day_and_month(postgres: bool) -> tuple[str, str]:
    """SQL for a request's UTC day and month (``r.created_at``), whatever the session's time zone (SQLite stores UTC
    already)."""
    if postgres:
        return "CAST(r.created_at AT TIME ZONE 'UTC' AS DATE)", "to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    return "date(r.created_at)", "strftime('%Y-%m', r.created_at)"


def artist_shares_view(postgres: bool, without_one_colour: bool) -> str:
    """``v_artist_shares``: per canonical artist and UTC day, the production requests (no evaluation run, no replay;
    with ``without_one_colour`` no image of one colour either) naming the artist, each counted once also when merged
    spellings shared it, their share sum and mean confidence."""
    day, month = _day_and_month(postgres)
    one_colour = " AND (m.one_colour IS NULL OR m.one_colour <> 1)" if without_one_colour else ""
    return f"""
        SELECT artist, day, month, COUNT(*) AS attributions, SUM(share) AS share_sum,
               AVG(confidence) AS mean_confidence
        FROM (
            SELECT {canonical("s.artist", "sh")} AS artist, {day} AS day, {month} AS month, s.request_id,
                   SUM(s.share) AS share, MAX(m.confidence) AS confidence
            FROM attribution_artist_shares s
            JOIN attribution_requests r ON r.id = s.request_id
            JOIN attribution_metrics m ON m.request_id = r.id
            WHERE r.evaluation_run_id IS NULL AND r.replay_of IS NULL{one_colour}
            GROUP BY {canonical("s.artist", "sh")}, {day}, {month}, s.request_id
        ) per_request
        GROUP BY artist, day, month
        """


def low_confidence_view(with_one_colour: bool) -> str:
    """``v_low_confidence``: the rows of ``v_attributions`` with a confidence below :data:`VIEW_LOW_CONFIDENCE`
    (with ``with_one_colour``, and those of images of one colour: their confidence is no evidence of likeness)."""
    low = f"SELECT * FROM v_attributions WHERE confidence < {VIEW_LOW_CONFIDENCE}"
    if not with_one_colour:
        return low
    return low + " OR request_id IN (SELECT request_id FROM attribution_metrics WHERE one_colour = 1)"
