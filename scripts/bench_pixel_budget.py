"""Peak memory of `attribution-audit serve` while N concurrent clients post small PNGs of huge dimensions.

A demo catalogue is ingested into a fresh data dir (efficientnet-lite0), a writer key created, and the real server
started in a subprocess (tests/servers.py) from the source tree ``--code`` (this checkout by default; an older
commit's tree, e.g. from `git archive`, measures the service before the budget of decoded pixels). Each client posts
``--requests`` requests of ``--images`` ``--side`` x ``--side`` PNGs (each a few hundred kB or less: shapes on a flat
ground). Measured: the
server process's resident memory once started (VmRSS) and its peak over the run (VmHWM, from /proc), and the answers'
statuses. Prints one Markdown table row per run; the rows are written into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from benchlib import run_together

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import cli_command, create_key, large_png, running_server  # noqa: E402 (the tests' server helper)

from attribution_audit.sources.synthetic import make_demo_catalogue  # noqa: E402


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) of a process, in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the source tree the server runs from")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--budget", type=int, default=None, help="ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS for the server")
    args = parser.parse_args()

    uploads = [large_png(args.side, seed) for seed in range(args.clients * args.images)]
    env = {"PYTHONPATH": str(args.code.resolve())}
    if args.budget:
        env["ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS"] = str(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)  # `python -m` puts the working directory first on sys.path: the server must import --code
        catalogue = make_demo_catalogue(root / "catalogue")
        data, database = root / "data", f"sqlite:///{root / 'data' / 'audit.sqlite'}"
        for command in (("db", "upgrade"), ("ingest", str(catalogue.manifest), "--embedder", "efficientnet-lite0")):
            subprocess.run(cli_command(data, database, *command), check=True, capture_output=True)
        key = create_key(data, database, "bench")
        with running_server(data, database, root / "serve.log", env=env) as server:
            idle = memory_kb(server.process.pid)["VmRSS"]
            statuses: Counter[int] = Counter()
            lock = threading.Lock()

            def client(index: int) -> None:
                mine = uploads[index * args.images : (index + 1) * args.images]
                files = [("images", (f"big{i}.png", data)) for i, data in enumerate(mine)]
                with server.client(key, timeout=600) as http:
                    for _ in range(args.requests):
                        status = http.post("/v1/attributions", files=files).status_code
                        with lock:
                            statuses[status] += 1

            wall = run_together([threading.Thread(target=client, args=(index,)) for index in range(args.clients)])
            peak = memory_kb(server.process.pid)["VmHWM"]
    mb = 1024
    print(
        f"| {args.code} | {args.budget or 'default'} | {args.clients} x {args.requests} x {args.images} | "
        f"{args.side}x{args.side}, "
        f"{min(map(len, uploads)) // 1000}-{max(map(len, uploads)) // 1000} kB | {idle // mb} | {peak // mb} | "
        f"{(peak - idle) // mb} | {dict(sorted(statuses.items()))} | {wall:.0f} |"
    )


if __name__ == "__main__":
    main()
