"""`make demo`: build a small catalogue, ingest it, attribute a few generated images, show the audit log.

Runs on embedded defaults (Qdrant Edge shard + SQLite in .demo/data) with the packaged offline embedder, through
the real CLI, so every step is what a user would type; every command is printed in full and can be pasted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from attribution_audit.sources.synthetic import make_demo_catalogue

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DATA = DEMO / "data"


def shown(path: Path) -> str:
    """A path as the user would type it from the repository root."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cli(*args: str) -> None:
    print("$ attribution-audit " + shlex.join(args), flush=True)
    environment = {**os.environ, "ATTRIBUTION_AUDIT_DATA_DIR": str(DATA)}
    subprocess.run([sys.executable, "-m", "attribution_audit", *args], check=True, env=environment)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help says what it does; no options
    catalogue = make_demo_catalogue(DEMO / "catalogue", queries_per_artist=1)
    print(f"$ export ATTRIBUTION_AUDIT_DATA_DIR={shlex.quote(shown(DATA))}")
    cli("ingest", shown(catalogue.manifest), "--embedder", "efficientnet-lite0")
    queries = catalogue.queries[:4]
    for query in queries:
        print(f"# {query.path.name} was generated in the style of {query.artist}")
    cli("attribute", *(shown(q.path) for q in queries), "--k", "5")
    cli("audit", "list", "--limit", "4")
    cli("audit", "verify")
    cli("report", "summary")
    print(f"\nAudit log: {shown(DATA / 'audit.sqlite')}  (SQLite; query it with any SQL client)")
    print(f"Vector store: {shown(DATA / 'qdrant')}  (embedded Qdrant Edge shard)")
    print("\nGo on from here (the data dir remembers its embedder; paste these lines):")
    print(f"  . {shown(ROOT / '.venv' / 'bin' / 'activate')}")
    print(f'  export ATTRIBUTION_AUDIT_DATA_DIR="$PWD/{shown(DATA)}"   # from {ROOT}')
    print(f"  attribution-audit attribute {shown(catalogue.queries[-1].path)} --k 5")
    print("  attribution-audit report artists --format csv")
    print("  attribution-audit audit list --limit 3")
    print(f"\nLabelled query set {shown(catalogue.evaluation)}, noise set {shown(catalogue.noise)}; the research")
    print("note's experiments on them: README (Evaluation) and docs/reproducing-the-note.md. The first one:")
    print(f"  attribution-audit evaluate run {shown(catalogue.evaluation)} --k-max 20 --k 5 --out .demo/evaluation")
    print("\nBrowse the demo log in the web console (a reader key; the key is the last line `keys create` prints):")
    print("  KEY=$(attribution-audit keys create officer-$RANDOM --role reader | tail -n 1)")
    print("  attribution-audit serve --port 8000 &   # stop it with: kill %1")
    print('  echo "open http://127.0.0.1:8000/console/ and sign in with $KEY"   # the dashboard, requests and pages')
    print("(API clients need a writer key: attribution-audit keys create NAME; see README.md, section Service.)")


if __name__ == "__main__":
    main()
