"""reporting views for analysts and compliance officers

Revision ID: 0003
Revises: 0002

Views (documented in docs/schema.md): v_attributions, v_attribution_neighbours, v_artist_shares, v_low_confidence,
v_ann_disagreements, v_catalogue. Artist names go through the alias table (artists.canonical_id), so merged
spellings report as one artist; the audit rows themselves keep what was recorded. Evaluation runs and replays are
excluded from v_artist_shares (they are not production attributions); v_attributions carries both flags.
v_artist_shares counts each request once per canonical artist, also when merged spellings shared it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOW_CONFIDENCE = 0.5
VIEWS = (
    "v_low_confidence",
    "v_ann_disagreements",
    "v_artist_shares",
    "v_attribution_neighbours",
    "v_catalogue",
    "v_attributions",
)


def _canonical(column: str, alias: str) -> str:
    """SQL for the canonical name of the artist named by ``column`` (itself when not merged)."""
    return (
        f"COALESCE((SELECT c.name FROM artists a_{alias} JOIN artists c ON c.id = a_{alias}.canonical_id "
        f"WHERE a_{alias}.name = {column}), {column})"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Days and months are UTC days, whatever the session's time zone (SQLite stores UTC already).
    day = "CAST(r.created_at AT TIME ZONE 'UTC' AS DATE)" if postgres else "date(r.created_at)"
    month = "to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM')" if postgres else "strftime('%Y-%m', r.created_at)"
    op.execute(
        f"""
        CREATE VIEW v_attributions AS
        SELECT r.id AS request_id, r.seq, r.created_at, r.requester, r.image_path, r.image_sha256,
               {_canonical("m.top_artist", "top")} AS top_artist, m.top_artist_share, m.confidence,
               m.confidence_model, m.entropy, m.nn_distance, m.margin,
               COALESCE(m.overlap_at_k, (SELECT rc.overlap_at_k FROM recall_checks rc WHERE rc.request_id = r.id
                                         ORDER BY rc.checked_at DESC, rc.id DESC LIMIT 1)) AS overlap_at_k,
               r.k, r.embedder_name, r.embedder_fingerprint, r.store_kind, r.collection, r.catalogue_version,
               r.record_hash, r.evaluation_run_id, r.replay_of,
               CASE WHEN r.evaluation_run_id IS NULL AND r.replay_of IS NULL THEN 1 ELSE 0 END AS is_production
        FROM attribution_requests r JOIN attribution_metrics m ON m.request_id = r.id
        """
    )
    op.execute(
        f"""
        CREATE VIEW v_attribution_neighbours AS
        SELECT n.request_id, n.rank, n.catalogue, n.work_id, n.work_version, n.artist AS recorded_artist,
               {_canonical("n.canonical_artist", "nb")} AS artist, n.similarity, n.distance, n.share
        FROM attribution_neighbours n
        """
    )
    op.execute(
        f"""
        CREATE VIEW v_artist_shares AS
        SELECT artist, day, month, COUNT(*) AS attributions, SUM(share) AS share_sum,
               AVG(confidence) AS mean_confidence
        FROM (
            SELECT {_canonical("s.artist", "sh")} AS artist, {day} AS day, {month} AS month, s.request_id,
                   SUM(s.share) AS share, MAX(m.confidence) AS confidence
            FROM attribution_artist_shares s
            JOIN attribution_requests r ON r.id = s.request_id
            JOIN attribution_metrics m ON m.request_id = r.id
            WHERE r.evaluation_run_id IS NULL AND r.replay_of IS NULL
            GROUP BY {_canonical("s.artist", "sh")}, {day}, {month}, s.request_id
        ) per_request
        GROUP BY artist, day, month
        """
    )
    op.execute(f"CREATE VIEW v_low_confidence AS SELECT * FROM v_attributions WHERE confidence < {LOW_CONFIDENCE}")
    op.execute("CREATE VIEW v_ann_disagreements AS SELECT * FROM v_attributions WHERE overlap_at_k < 1")
    op.execute(
        f"""
        CREATE VIEW v_catalogue AS
        SELECT c.name AS catalogue, {_canonical("a.name", "cat")} AS artist,
               COUNT(*) AS works,
               SUM(CASE WHEN w.withdrawn_at IS NULL THEN 1 ELSE 0 END) AS active,
               SUM(CASE WHEN w.withdrawn_at IS NULL THEN 0 ELSE 1 END) AS withdrawn,
               SUM(w.version) AS versions, MAX(w.updated_at) AS last_updated
        FROM works w JOIN catalogues c ON c.id = w.catalogue_id JOIN artists a ON a.id = w.artist_id
        GROUP BY c.name, {_canonical("a.name", "cat")}
        """
    )


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
