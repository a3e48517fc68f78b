"""scripts/build_benchmark.py: the font-family benchmark is deterministic, readable by the project's own readers,
keeps query texts out of the catalogue, and stops with one line when its font packages are missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attribution_audit.sources.labelled import read_labelled
from attribution_audit.sources.manifest import read_csv_manifest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_benchmark.py"
FONTS = Path("/usr/share/fonts")
SMALL = ["--artists", "3", "--works", "4", "--held-out", "2", "--copies", "5"]


def _build(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *extra], capture_output=True, text=True)


def fonts_installed() -> bool:
    names = {p.name for p in FONTS.rglob("*")} if FONTS.exists() else set()
    return {"Carlito-Regular.ttf", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"} <= names


@pytest.mark.skipif(not fonts_installed(), reason="font packages of the benchmark not installed")
def test_benchmark_is_deterministic_and_readable(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert _build(first, *SMALL).returncode == 0
    assert _build(second, *SMALL).returncode == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 3 + 3 * (4 + 2 + 5)
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)

    manifest = read_csv_manifest(first / "catalogue.csv")
    assert not manifest.failures and len(manifest.rows) == 12
    assert {row.artist for row in manifest.rows} == {"DejaVu Sans", "DejaVu Sans Bold", "DejaVu Serif"}
    style = read_labelled(first / "style_queries.csv")
    assert len(style) == 6 and all(q.subset == "style" and not q.work_ids for q in style)
    catalogue_images = {(first / row.path).read_bytes() for row in manifest.rows}
    assert not any(q.path.read_bytes() in catalogue_images for q in style)
    copies = read_labelled(first / "copy_queries.csv")
    work_artist = {row.work_id: row.artist for row in manifest.rows}
    assert len(copies) == 15 and {q.subset for q in copies} == {"crop", "colour", "blur", "jpeg", "overlay"}
    assert all(len(q.work_ids) == 1 and work_artist[q.work_ids[0]] == q.artist for q in copies)


def test_missing_font_packages_stop_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "fonts"
    empty.mkdir()
    result = _build(tmp_path / "out", *SMALL, "--fonts-dir", str(empty))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "apt-get install -y --no-install-recommends fonts-dejavu-core" in result.stderr
    assert not (tmp_path / "out").exists()
