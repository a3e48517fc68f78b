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

from attribution_audit.store.reporting_views import artist_shares_view, canonical, low_confidence_view

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = (
    "v_low_confidence",
    "v_ann_disagreements",
    "v_artist_shares",
    "v_attribution_neighbours",
    "v_catalogue",
    "v_attributions",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(
        f"""
        CREATE VIEW v_attributions AS
        SELECT r.id AS request_id, r.seq, r.created_at, r.requester, r.image_path, r.image_sha256,
               {canonical("m.top_artist", "top")} AS top_artist, m.top_artist_share, m.confidence,
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
               {canonical("n.canonical_artist", "nb")} AS artist, n.similarity, n.distance, n.share
        FROM attribution_neighbours n
        """
    )
    op.execute("CREATE VIEW v_artist_shares AS " + artist_shares_view(postgres, without_one_colour=False))
    op.execute("CREATE VIEW v_low_confidence AS " + low_confidence_view(with_one_colour=False))
    op.execute("CREATE VIEW v_ann_disagreements AS SELECT * FROM v_attributions WHERE overlap_at_k < 1")
    op.execute(
        f"""
        CREATE VIEW v_catalogue AS
        SELECT c.name AS catalogue, {canonical("a.name", "cat")} AS artist,
               COUNT(*) AS works,
               SUM(CASE WHEN w.withdrawn_at IS NULL THEN 1 ELSE 0 END) AS active,
               SUM(CASE WHEN w.withdrawn_at IS NULL THEN 0 ELSE 1 END) AS withdrawn,
               SUM(w.version) AS versions, MAX(w.updated_at) AS last_updated
        FROM works w JOIN catalogues c ON c.id = w.catalogue_id JOIN artists a ON a.id = w.artist_id
        GROUP BY c.name, {canonical("a.name", "cat")}
        """
    )


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
