"""audit views for the read-only role (PostgreSQL)

Revision ID: 0004
Revises: 0003

`db grant-reader` gives a role SELECT on views only. The reporting views (0003) do not carry every column the hash
chain covers, and the schema revision lives in alembic_version, so a reader could not check the schema, list or
show requests, or verify the chain. These views give it exactly that, and no more:

- v_audit_requests, v_audit_neighbours, v_audit_artist_shares, v_audit_metrics: every column of the four hashed
  tables, except that the query vectors appear only as their SHA-256 (hex), which is what the hash covers; the
  vectors themselves stay unreadable (replay and recall checks, which need them, are owner commands);
- v_audit_neighbour_images: the image of the work version each neighbour was attributed as (`report request`);
- v_schema_version: the Alembic revision.

Like every view, they run with their owner's rights: the role needs and gets no right on any table. Roles that
could already read the reporting views (granted before this revision) are granted these too.

SQLite has no roles (file permissions protect it) and no SHA-256 function: nothing is created there; the tool reads
the tables directly.
"""

from collections.abc import Sequence

from alembic import op

from attribution_audit.store.roles import grant_to_readers

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "v_audit_requests": """
        SELECT id, seq, prev_hash, record_hash, created_at, requester, image_path, image_sha256,
               encode(sha256(query_vector), 'hex') AS query_vector_sha256,
               encode(sha256(style_vector), 'hex') AS style_vector_sha256,
               embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version, index_params,
               parameters, k, replay_of, evaluation_run_id, labelled_query_id
        FROM attribution_requests
    """,
    "v_audit_neighbours": """
        SELECT request_id, rank, work_pk, catalogue, work_id, work_version, artist, canonical_artist, similarity,
               distance, share
        FROM attribution_neighbours
    """,
    "v_audit_artist_shares": "SELECT request_id, artist, share FROM attribution_artist_shares",
    "v_audit_metrics": """
        SELECT request_id, entropy, nn_distance, margin, top_artist, top_artist_share, overlap_at_k, exact_method,
               confidence, confidence_model
        FROM attribution_metrics
    """,
    "v_audit_neighbour_images": """
        SELECT n.request_id, n.rank, COALESCE(v.image_path, w.image_path) AS image_path
        FROM attribution_neighbours n
        JOIN works w ON w.id = n.work_pk
        LEFT JOIN work_versions v ON v.work_pk = n.work_pk AND v.version = n.work_version
    """,
    "v_schema_version": "SELECT version_num FROM alembic_version",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")
    op.execute(grant_to_readers(list(VIEWS)))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
