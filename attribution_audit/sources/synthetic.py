"""A small synthetic catalogue: each "artist" has a style (palette, motif, stroke), each work a new composition.

Used by ``make demo`` and the tests. Generated queries are new compositions in an artist's style, slightly
blurred and noised, standing in for images a model trained on that artist would produce.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
MOTIFS = ("stripes", "circles", "squares", "waves", "triangles", "dots")
ARTIST_NAMES = ("Ada Vermeer", "Bruno Kahlo", "Chiara Monet", "Dmitri Hokusai", "Elif Klimt", "Farid Turner")


@dataclass(frozen=True)
class DemoQuery:
    path: Path
    artist: str


@dataclass(frozen=True)
class DemoCatalogue:
    manifest: Path
    queries: list[DemoQuery]
    labelled: Path  # CSV path,artist of the generated queries
    evaluation: Path  # labelled.csv: the same queries with true works, subset and caption (evaluate ...)
    noise: Path  # noise/noise.csv: works of another domain, for heterogeneous noise (evaluate noise)


NOISE_STYLES = (  # greyscale and neon "other domain" styles no demo artist uses
    {"palette": [(20, 20, 20), (240, 240, 240), (128, 128, 128)], "motif": "circles", "stroke": 3},
    {"palette": [(250, 240, 200), (30, 90, 30), (120, 60, 10)], "motif": "triangles", "stroke": 5},
    {"palette": [(10, 30, 90), (250, 200, 0), (0, 200, 200)], "motif": "dots", "stroke": 6},
)
NOISE_WORKS_PER_STYLE = 12


def _style(index: int) -> dict[str, object]:
    rng = np.random.default_rng(1000 + index)
    hue = index / len(ARTIST_NAMES)
    palette = [
        tuple(int(255 * (0.5 + 0.5 * math.sin(2 * math.pi * (hue + shift) + c))) for c in (0.0, 2.1, 4.2))
        for shift in (0.0, 0.12, 0.3)
    ]
    return {"palette": palette, "motif": MOTIFS[index % len(MOTIFS)], "stroke": int(rng.integers(2, 9))}


def draw_work(style: dict[str, object], seed: int) -> Image.Image:
    """One composition in a style: background, then 12-30 motif elements in the palette."""
    rng = np.random.default_rng(seed)
    palette: list[tuple[int, int, int]] = style["palette"]  # type: ignore[assignment]
    stroke: int = style["stroke"]  # type: ignore[assignment]
    image = Image.new("RGB", (SIZE, SIZE), palette[0])
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(12, 30))):
        colour = palette[int(rng.integers(1, len(palette)))]
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        r = int(rng.integers(8, 48))
        motif = style["motif"]
        if motif == "stripes":
            draw.line([(x - r * 3, 0), (x + r * 3, SIZE)], fill=colour, width=stroke * 2)
        elif motif == "circles":
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=stroke)
        elif motif == "squares":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        elif motif == "waves":
            points = [(i, y + r * math.sin(i / (8 + stroke))) for i in range(0, SIZE, 4)]
            draw.line(points, fill=colour, width=stroke)
        elif motif == "triangles":
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        else:
            draw.ellipse([x - stroke, y - stroke, x + stroke, y + stroke], fill=colour)
    return image


def _generated(style: dict[str, object], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = draw_work(style, seed).filter(ImageFilter.GaussianBlur(1.0))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_demo_catalogue(
    out_dir: str | Path, artists: int = 6, works_per_artist: int = 8, queries_per_artist: int = 1
) -> DemoCatalogue:
    """Write works (PNG) + ``catalogue.csv``, generated queries and their labels (``queries.csv``) under ``out_dir``;
    deterministic."""
    out = Path(out_dir)
    (out / "works").mkdir(parents=True, exist_ok=True)
    (out / "generated").mkdir(parents=True, exist_ok=True)
    manifest = out / "catalogue.csv"
    queries: list[DemoQuery] = []
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id", "title", "year"])
        for a in range(artists):
            name, style = ARTIST_NAMES[a % len(ARTIST_NAMES)], _style(a)
            for w in range(works_per_artist):
                rel = f"works/a{a}_w{w}.png"
                draw_work(style, seed=a * 1000 + w).save(out / rel)
                writer.writerow([rel, name, f"A{a}-W{w:03d}", f"Composition {w + 1}", 1900 + a * 10 + w])
            for q in range(queries_per_artist):
                path = out / "generated" / f"gen_a{a}_{q}.png"
                _generated(style, seed=a * 1000 + 500 + q).save(path)
                queries.append(DemoQuery(path, name))
    labelled = out / "queries.csv"  # the generated images with their true artist: a labelled query set
    with labelled.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist"])
        writer.writerows([q.path.relative_to(out).as_posix(), q.artist] for q in queries)
    return DemoCatalogue(
        manifest, queries, labelled, _write_evaluation_set(out, queries, works_per_artist), _write_noise(out / "noise")
    )


def _write_evaluation_set(out: Path, queries: list[DemoQuery], works_per_artist: int) -> Path:
    """labelled.csv: each generated image with its artist's works as true works (it was made in that style), a
    subset (alpha: even artists, beta: odd) and a caption of what it shows."""
    path = out / "labelled.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_ids", "subset", "caption"])
        for query in queries:
            a = int(query.path.stem.split("_")[1][1:])
            works = ";".join(f"A{a}-W{w:03d}" for w in range(works_per_artist))
            caption = f"{MOTIFS[a % len(MOTIFS)]} on a plain ground"
            subset = "alpha" if a % 2 == 0 else "beta"
            writer.writerow([query.path.relative_to(out).as_posix(), query.artist, works, subset, caption])
    return path


def _write_noise(folder: Path) -> Path:
    """noise.csv: 36 works of three styles unlike any demo artist's."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "noise.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id"])
        for n, style in enumerate(NOISE_STYLES):
            for w in range(NOISE_WORKS_PER_STYLE):
                draw_work(style, seed=77_000 + n * 100 + w).save(folder / f"n{n}_{w}.png")
                writer.writerow([f"n{n}_{w}.png", f"Other Domain {n}", f"N{n}-W{w:03d}"])
    return manifest
