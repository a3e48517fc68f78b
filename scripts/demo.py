"""`make demo`: build a small catalogue, ingest it, attribute a few generated images, show the audit log.

Runs on embedded defaults (Qdrant Edge shard + SQLite in .demo/data) with the packaged offline embedder, through
the real CLI, so every step is what a user would type.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from attribution_audit.sources.synthetic import make_demo_catalogue

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"


def cli(*args: str) -> None:
    command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(DEMO / "data"), *args]
    print("$ attribution-audit " + " ".join(args[:3]) + (" ..." if len(args) > 3 else ""), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    catalogue = make_demo_catalogue(DEMO / "catalogue", queries_per_artist=1)
    cli("db", "upgrade")
    cli("ingest", str(catalogue.manifest), "--embedder", "efficientnet-lite0")
    queries = catalogue.queries[:4]
    for query in queries:
        print(f"# {query.path.name} was generated in the style of {query.artist}")
    cli("attribute", *(str(q.path) for q in queries), "--k", "5", "--embedder", "efficientnet-lite0")
    cli("audit", "list", "--limit", "4")
    cli("audit", "verify")
    cli("report", "summary")
    print(f"\nAudit log: {DEMO / 'data' / 'audit.sqlite'}  (SQLite; query it with any SQL client)")
    print(f"Vector store: {DEMO / 'data' / 'qdrant'}  (embedded Qdrant Edge shard)")


if __name__ == "__main__":
    main()
