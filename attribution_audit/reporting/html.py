"""One attribution as a self-contained HTML page (thumbnails embedded): what a compliance officer hands over.

Like the note's Figures 3 and 11: the generated image, its neighbours ranked with distances, artists and shares,
then the indicators, the parameters and fingerprints, and the record's hash with its integrity check.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from attribution_audit.domain.confidence import (
    DEFAULT_CENTROID_MODEL_NAME,
    DEFAULT_MODEL_NAME,
    LOW_CONFIDENCE,
    STORED_MODEL_PREFIX,
)
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import AttributionAuditError, ImageError
from attribution_audit.sources.images import load_image

THUMBNAIL = 180


CHANGED = "changed since attribution: the sha256 of this file is not the recorded one"
UNPINNED = (
    "not pinned: this record (written before revision 0015) holds no digest of the image; the file is checked against "
    "the digest the catalogue holds now, which the hash chain does not cover"
)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates shared by ``report request --html`` and the web console (``templates/``)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("attribution_audit.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """A page from the shared templates; ``console`` (default False) adds the console's navigation."""
    return (
        environment()
        .get_template(template)
        .render(**{"console": False, "low_confidence": LOW_CONFIDENCE, "changed": CHANGED, **context})
    )


@dataclass(frozen=True)
class Picture:
    """An image as a page shows it: inlined as a JPEG thumbnail (None when the file is gone or unreadable), and
    whether the file is still the one attributed: ``ok``, ``changed``, ``missing``, or ``unchecked`` (no digest)."""

    name: str
    src: str | None
    status: str


def picture(path: str | None, expected_sha256: str | None = None) -> Picture:
    """The thumbnail of ``path``, checked against the sha256 recorded when it was attributed."""
    name = Path(path).name if path else ""
    if not path:
        return Picture(name, None, "missing")
    try:
        loaded = load_image(path)
    except ImageError:
        return Picture(name, None, "missing")
    if expected_sha256 is not None and loaded.sha256 != expected_sha256:
        return Picture(name, None, "changed")  # another image than the one attributed: never shown as if it were
    image = loaded.image
    image.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    src = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    return Picture(name, src, "unchecked" if expected_sha256 is None else "ok")


@dataclass(frozen=True)
class Pin:
    """What a neighbour's image is checked against, in words: ``bad`` when the catalogue now names another image
    than the record pinned."""

    text: str
    bad: bool = False


def neighbour_picture(path: str | None, pinned: str | None, catalogued: str | None) -> tuple[Picture, Pin]:
    """A neighbour's image (``path``, the catalogue's, with its digest ``catalogued``) checked against the digest the
    record pinned; against the catalogue's where the record pinned none (older records)."""
    if pinned is None:
        return picture(path, catalogued), Pin(UNPINNED)
    if catalogued is not None and catalogued != pinned:
        moved = (
            f"the catalogue now names another image (sha256 {catalogued}) for this work version than the one "
            f"attributed (sha256 {pinned}): it was changed or re-ingested since; the file is checked against the "
            "recorded digest"
        )
        return picture(path, pinned), Pin(moved, bad=True)
    return picture(path, pinned), Pin(f"pinned by the record: sha256 {pinned}")


NOT_RECORDED = "none recorded"  # not measured for the request (no such space), or recorded before the indicator


def low_reason(model: str) -> str:
    """What a low confidence means, by what produced it: the default formula of either rule, or a calibrated model."""
    if model == DEFAULT_MODEL_NAME:
        return "the default formula gives it: the nearest works are far or disagree"
    if model == DEFAULT_CENTROID_MODEL_NAME:
        return (
            "the centroid rule's default formula gives it: few of the nearest works are the reported artist's, or "
            "they are far"
        )
    return f"the calibrated model {model} gives it, weighing the recorded indicators"


def request_context(
    attribution: Attribution, images: dict[int, str], digests: dict[int, str] | None = None
) -> dict[str, Any]:
    """What the request page shows of one attribution: pictures checked against their digests (a neighbour's against
    the one its record pinned; ``digests``: the catalogue's), the artist shares as bars, indicators and
    provenance."""

    def fmt(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    def later(value: float | None) -> str:  # an indicator not measured for (or recorded before) this request
        return NOT_RECORDED if value is None else f"{value:.3f}"

    digests = digests or {}
    top = max(attribution.artist_shares.values(), default=1.0) or 1.0
    return {
        "a": attribution,
        "query": picture(attribution.image, attribution.image_sha256),
        "neighbours": [
            (n, *neighbour_picture(images.get(n.rank), n.image_sha256, digests.get(n.rank)))
            for n in attribution.neighbours
        ],
        "low_reason": low_reason(attribution.confidence_model),
        "share_bars": [(artist, f"{share:.3f}", share / top) for artist, share in attribution.artist_shares.items()],
        "indicators": [
            ("artist-diversity entropy", fmt(attribution.entropy, 3)),
            ("nearest-neighbour distance", fmt(attribution.nn_distance)),
            ("margin (best vs second artist)", fmt(attribution.margin)),
            ("top artist", attribution.top_artist or "-"),
            ("top artist's share", fmt(attribution.top_artist_share, 6)),
            ("overlap@K with exact search", fmt(attribution.overlap_at_k, 3)),
            ("agreement between base spaces (top artist's share of the other space's K)", later(attribution.agreement)),
            (
                "agreement of spaces (share of the other spaces with this top artist)",
                later(attribution.agreement_spaces),
            ),
            ("centroid log-odds (this learned space)", later(attribution.centroid_log_odds)),
            ("centroid log-odds (mean over the other learned spaces)", later(attribution.centroid_log_odds_others)),
            (
                "crop log-odds (mean over the four corner crops, this learned space)",
                later(attribution.crop_log_odds),
            ),
            (
                "other learned spaces these read (name:version)",
                NOT_RECORDED if (read := attribution.other_space_versions) is None else read or "none",
            ),
            ("confidence", f"{attribution.confidence:.3f} ({attribution.confidence_model})"),
            (
                "fingerprint of the confidence model (sha256)",
                attribution.confidence_model_sha256
                or (
                    NOT_RECORDED if attribution.confidence_model.startswith(STORED_MODEL_PREFIX) else "none (a formula)"
                ),
            ),
            ("copy check", attribution.copy_verdict()),
        ],
        "provenance": [
            ("request id", attribution.request_id),
            ("created (UTC)", attribution.created_at.isoformat()),
            ("requester", attribution.requester),
            ("image sha256", attribution.image_sha256),
            ("embedder", attribution.embedder_fingerprint),
            ("store / collection", f"{attribution.store_kind} / {attribution.collection}"),
            ("catalogue version", attribution.catalogue_version),
            ("index parameters", json.dumps(attribution.index_params, sort_keys=True)),
            ("attribution parameters", json.dumps(attribution.parameters, sort_keys=True)),
            ("chain position (seq)", str(attribution.seq)),
            ("previous record hash", attribution.prev_hash),
            ("record hash", attribution.record_hash),
        ],
    }


def render_request_html(
    attribution: Attribution,
    images: dict[int, str],
    intact: bool,
    digests: dict[int, str] | None = None,
    **page: Any,
) -> str:
    """The self-contained page of one request: ``images`` maps a neighbour's rank to its work version's image in
    the catalogue (``digests`` to the catalogue's sha256 of it), ``intact`` says whether the record still matches
    its hash; ``page`` adds to the context (``chain``: the latest verification; ``notes``: lines shown as notes;
    ``console`` and ``who``: the console's navigation)."""
    context = {"chain": None, "notes": [], **page, **request_context(attribution, images, digests)}
    return render("request.html", intact=intact, **context)


def write_page(page: str, out: str | Path) -> Path:
    """Write an HTML page; one-line error when the path is not writable."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise AttributionAuditError(
            f"{out}: cannot write the report ({exc.strerror}); choose a writable path"
        ) from None
    return out


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-pdf-header-footer",
)


def print_pdf(page_html: str, out: str | Path) -> Path:
    """The same page printed to PDF by headless Chromium (Debian package ``chromium``)."""
    import shutil
    import subprocess
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise AttributionAuditError("--pdf needs Chromium: install it (e.g. `apt-get install chromium`) or use --html")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        page = write_page(page_html, Path(tmp) / "request.html")
        printed = Path(tmp) / "request.pdf"
        command = [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp}/profile",
            f"--print-to-pdf={printed}",
            page.as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise AttributionAuditError(f"{out}: Chromium did not print the PDF within 120 s; use --html") from None
        if result.returncode != 0 or not printed.exists():
            raise AttributionAuditError(
                f"{out}: Chromium could not print the PDF (exit {result.returncode}); use --html"
            )
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(printed, out)
        except OSError as exc:
            raise AttributionAuditError(
                f"{out}: cannot write the PDF ({exc.strerror}); choose a writable path"
            ) from None
    return out
