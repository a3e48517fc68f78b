"""The real service in a subprocess (``attribution-audit serve`` on a free loopback port), for the HTTP tests, the
console tests and the benchmark."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image, ImageDraw


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running service and a client on it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def cli_command(data_dir: Path, database_url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "attribution_audit",
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        *args,
    ]


@contextmanager
def running_server(
    data_dir: Path,
    database_url: str,
    log: Path,
    extra: Sequence[str] = (),
    startup_s: float = 180,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``serve`` on a free port (``env`` added to this process's environment), wait until /v1/health answers,
    stop it (SIGTERM) after."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cli_command(data_dir, database_url, "serve", "--port", str(port), *extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}/v1/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {startup_s} s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def revoke_key(data_dir: Path, database_url: str, name: str) -> str:
    """Revoke a key with the real ``keys revoke`` command (another process than the service); what it printed."""
    done = subprocess.run(
        cli_command(data_dir, database_url, "keys", "revoke", name), capture_output=True, text=True, check=True
    )
    return done.stdout


def create_key(data_dir: Path, database_url: str, name: str, role: str = "writer") -> str:
    """A key made by the real ``keys create`` command: its last line of stdout."""
    done = subprocess.run(
        cli_command(data_dir, database_url, "keys", "create", name, "--role", role),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def large_png(side: int, seed: int = 0) -> bytes:
    """A PNG of ``side`` x ``side`` pixels in few bytes (a few hundred kB at 8000 px): shapes on a flat ground, so
    that small uploads decode to many pixels (the service's pixel budget)."""
    image = Image.new("RGB", (side, side), (240, 236, 228))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        x, y = (seed * 97 + i * 1733) % side, (seed * 61 + i * 3119) % side
        draw.ellipse((x, y, x + side // 4, y + side // 5), fill=(30 * i % 255, 90, 200 - 20 * i))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
