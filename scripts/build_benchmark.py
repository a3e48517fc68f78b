"""Build the font-family benchmark: the same texts rendered in 40 font faces (face = "artist"), so that content is
fixed and only style varies.

Writes under OUT (seeded, deterministic: the same arguments give byte-identical files):
- ``catalogue.csv`` (path,artist,work_id,title) + ``works/``: the catalogue, ``--works`` texts per artist;
- ``style_queries.csv`` + ``style/``: ``--held-out`` further texts per artist, never in the catalogue, rendered in
  the artist's face (labelled queries ``path,artist,work_ids,subset``; subset ``style``, no true work);
- ``copy_queries.csv`` + ``copies/``: ``--copies`` edited copies per artist of catalogue works (crop, colour, blur,
  JPEG, small overlay, cycled), labelled with their source work (subset = the edit).

The faces come from Debian font packages; a missing face stops the script with one line naming the packages to
install (``apt-get install -y --no-install-recommends ...``).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

SIZE = 256
FONTS_DIR = Path("/usr/share/fonts")

# (artist, font file, Debian package): 40 faces of 20 families, Latin script, free licences.
FACES: tuple[tuple[str, str, str], ...] = (
    ("DejaVu Sans", "DejaVuSans.ttf", "fonts-dejavu-core"),
    ("DejaVu Sans Bold", "DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    ("DejaVu Serif", "DejaVuSerif.ttf", "fonts-dejavu-core"),
    ("DejaVu Sans Mono", "DejaVuSansMono.ttf", "fonts-dejavu-core"),
    ("DejaVu Serif Italic", "DejaVuSerif-Italic.ttf", "fonts-dejavu-extra"),
    ("DejaVu Sans Condensed Oblique", "DejaVuSansCondensed-Oblique.ttf", "fonts-dejavu-extra"),
    ("Liberation Sans", "LiberationSans-Regular.ttf", "fonts-liberation"),
    ("Liberation Serif Italic", "LiberationSerif-Italic.ttf", "fonts-liberation"),
    ("Liberation Mono Bold", "LiberationMono-Bold.ttf", "fonts-liberation"),
    ("Liberation Sans Narrow", "LiberationSansNarrow-Regular.ttf", "fonts-liberation"),
    ("FreeSerif", "FreeSerif.ttf", "fonts-freefont-ttf"),
    ("FreeSans", "FreeSans.ttf", "fonts-freefont-ttf"),
    ("FreeMono", "FreeMono.ttf", "fonts-freefont-ttf"),
    ("C059 Roman", "C059-Roman.otf", "fonts-urw-base35"),
    ("Nimbus Roman Italic", "NimbusRoman-Italic.otf", "fonts-urw-base35"),
    ("P052 Roman", "P052-Roman.otf", "fonts-urw-base35"),
    ("URW Bookman Light", "URWBookman-Light.otf", "fonts-urw-base35"),
    ("URW Gothic Book", "URWGothic-Book.otf", "fonts-urw-base35"),
    ("Z003 Medium Italic", "Z003-MediumItalic.otf", "fonts-urw-base35"),
    ("Nimbus Sans Narrow Bold", "NimbusSansNarrow-Bold.otf", "fonts-urw-base35"),
    ("Nimbus Mono PS", "NimbusMonoPS-Regular.otf", "fonts-urw-base35"),
    ("Carlito", "Carlito-Regular.ttf", "fonts-crosextra-carlito"),
    ("Caladea Italic", "Caladea-Italic.ttf", "fonts-crosextra-caladea"),
    ("Linux Libertine", "LinLibertine_R.otf", "fonts-linuxlibertine"),
    ("Linux Biolinum", "LinBiolinum_R.otf", "fonts-linuxlibertine"),
    ("EB Garamond", "EBGaramond12-Regular.otf", "fonts-ebgaramond"),
    ("Cantarell", "Cantarell-Regular.otf", "fonts-cantarell"),
    ("Cantarell Thin", "Cantarell-Thin.otf", "fonts-cantarell"),
    ("Open Sans", "OpenSans-Regular.ttf", "fonts-open-sans"),
    ("Open Sans Condensed Light", "OpenSans-CondLight.ttf", "fonts-open-sans"),
    ("Roboto", "Roboto-Regular.ttf", "fonts-roboto-unhinted"),
    ("Roboto Condensed Bold", "RobotoCondensed-Bold.ttf", "fonts-roboto-unhinted"),
    ("Lato Hairline", "Lato-Hairline.ttf", "fonts-lato"),
    ("Lato Black", "Lato-Black.ttf", "fonts-lato"),
    ("Lato", "Lato-Regular.ttf", "fonts-lato"),
    ("Comic Neue", "ComicNeue-Regular.otf", "fonts-comic-neue"),
    ("Noto Serif", "NotoSerif-Regular.ttf", "fonts-noto-core"),
    ("Noto Sans Italic", "NotoSans-Italic.ttf", "fonts-noto-core"),
    ("Noto Serif Display Italic", "NotoSerifDisplay-Italic.ttf", "fonts-noto-core"),
    ("Noto Sans Display Bold", "NotoSansDisplay-Bold.ttf", "fonts-noto-core"),
)

WORD_TEXT = (
    "river stone light garden window morning silver harbour letter winter orchard candle meadow lantern pocket "
    "thunder velvet quiet marble forest copper ribbon evening shadow compass feather island valley mirror cotton "
    "summer anchor basket bridge castle dragon engine fabric glacier hammer ivory jungle kettle ladder magnet "
    "needle ocean pepper quartz rocket saddle tunnel umbrella violin wagon yellow zephyr amber bakery cherry "
    "dolphin ember falcon granite honey indigo jasmine kingdom lemon mosaic nectar olive puzzle riddle saffron "
    "tiger walnut almond breeze canyon desert echo fossil grove horizon jade kite lagoon maple nomad opal prism "
    "quill raven sparrow timber vessel willow atlas beacon cedar dune fjord gazelle hollow inlet juniper"
)
WORDS = tuple(WORD_TEXT.split())


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def find_faces(fonts_dir: Path, artists: int) -> list[tuple[str, Path]]:
    """(artist, font file) of the first ``artists`` faces; exits with one line naming the missing packages."""
    found = {path.name: path for path in sorted(fonts_dir.rglob("*")) if path.suffix in (".ttf", ".otf")}
    chosen = FACES[:artists]
    missing = sorted({package for _, file, package in chosen if file not in found})
    if missing:
        _fail(
            f"font faces missing under {fonts_dir}; install them: "
            f"apt-get install -y --no-install-recommends {' '.join(missing)}"
        )
    return [(artist, found[file]) for artist, file, _ in chosen]


@dataclass(frozen=True)
class Page:
    """The content of one work, the same for every artist: text, size, spacing, margin, ink and paper colours."""

    text: str
    size: int
    spacing: float
    margin: int
    ink: tuple[int, int, int]
    paper: tuple[int, int, int]


def page_of(index: int, seed: int) -> Page:
    """The page of work ``index`` (seeded): only the face that renders it differs between artists."""
    rng = np.random.default_rng([seed, index])
    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), 40)]
    ink = tuple(int(v) for v in rng.integers(0, 110, 3))
    paper = tuple(int(v) for v in rng.integers(190, 256, 3))
    return Page(
        " ".join(words),
        int(rng.integers(16, 36)),
        float(rng.uniform(1.1, 1.6)),
        int(rng.integers(6, 30)),
        (ink[0], ink[1], ink[2]),
        (paper[0], paper[1], paper[2]),
    )


def render(page: Page, font_file: Path) -> Image.Image:
    """The page's text wrapped to the image, in one face."""
    font = ImageFont.truetype(str(font_file), page.size)
    image = Image.new("RGB", (SIZE, SIZE), page.paper)
    draw = ImageDraw.Draw(image)
    lines: list[str] = []
    for word in page.text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= SIZE - 2 * page.margin:
            lines[-1] = candidate
        else:
            lines.append(word)
    y = page.margin
    for line in lines:
        if y + page.size > SIZE - page.margin:
            break
        draw.text((page.margin, y), line, fill=page.ink, font=font)
        y += int(page.size * page.spacing)
    return image


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(SIZE * rng.uniform(0.75, 0.9))
    x, y = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
    return image.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    tint = Image.new("RGB", image.size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    return ImageEnhance.Contrast(Image.blend(image, tint, float(rng.uniform(0.2, 0.35)))).enhance(0.8)


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 2.0))))


def _jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(15, 35)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    copy = image.copy()
    draw = ImageDraw.Draw(copy)
    w, h = (int(v) for v in rng.integers(40, 70, 2))
    x, y = (int(v) for v in rng.integers(0, SIZE - 70, 2))
    draw.rectangle((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return copy


EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "crop": _crop,
    "colour": _colour,
    "blur": _blur,
    "jpeg": _jpeg,
    "overlay": _overlay,
}


def build(out: Path, *, artists: int, works: int, held_out: int, copies: int, seed: int, fonts_dir: Path) -> int:
    """Write the benchmark under ``out``; the number of images written."""
    faces = find_faces(fonts_dir, artists)
    for folder in ("works", "style", "copies"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    pages = [page_of(i, seed) for i in range(works + held_out)]
    catalogue, style, copy_rows = [], [], []
    for a, (artist, font_file) in enumerate(faces):
        rendered = [render(page, font_file) for page in pages]
        for w in range(works):
            rel = f"works/a{a:02d}_w{w:03d}.png"
            rendered[w].save(out / rel)
            catalogue.append([rel, artist, f"A{a:02d}-W{w:03d}", " ".join(pages[w].text.split()[:4])])
        for q in range(held_out):
            rel = f"style/a{a:02d}_q{q:03d}.png"
            rendered[works + q].save(out / rel)
            style.append([rel, artist, "", "style"])
        rng = np.random.default_rng([seed, 7, a])
        for c in range(copies):
            w = int(rng.integers(0, works))
            edit = list(EDITS)[(a * copies + c) % len(EDITS)]
            rel = f"copies/a{a:02d}_c{c:03d}_{edit}.png"
            EDITS[edit](rendered[w], rng).save(out / rel)
            copy_rows.append([rel, artist, f"A{a:02d}-W{w:03d}", edit])
    _write_csv(out / "catalogue.csv", ["path", "artist", "work_id", "title"], catalogue)
    _write_csv(out / "style_queries.csv", ["path", "artist", "work_ids", "subset"], style)
    _write_csv(out / "copy_queries.csv", ["path", "artist", "work_ids", "subset"], copy_rows)
    return len(catalogue) + len(style) + len(copy_rows)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--artists", type=int, default=len(FACES), help=f"font faces, at most {len(FACES)}")
    parser.add_argument("--works", type=int, default=20, help="catalogue works per artist")
    parser.add_argument("--held-out", type=int, default=8, help="style queries per artist (texts not catalogued)")
    parser.add_argument("--copies", type=int, default=5, help="edited copies of catalogue works per artist")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--fonts-dir", type=Path, default=FONTS_DIR)
    args = parser.parse_args(argv)
    if not 2 <= args.artists <= len(FACES) or args.works < 1 or args.held_out < 0 or args.copies < 0:
        _fail(f"--artists must be 2..{len(FACES)}, --works >= 1, --held-out and --copies >= 0")
    count = build(
        args.out,
        artists=args.artists,
        works=args.works,
        held_out=args.held_out,
        copies=args.copies,
        seed=args.seed,
        fonts_dir=args.fonts_dir,
    )
    print(f"{count} images under {args.out} (catalogue.csv, style_queries.csv, copy_queries.csv)")


if __name__ == "__main__":
    main()
