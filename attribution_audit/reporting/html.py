"""One attribution as a self-contained HTML page (thumbnails embedded): what a compliance officer hands over.

Like the note's Figures 3 and 11: the generated image, its neighbours ranked with distances, artists and shares,
then the indicators, the parameters and fingerprints, and the record's hash with its integrity check.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from attribution_audit.domain.results import Attribution
from attribution_audit.errors import AttributionAuditError, ImageError
from attribution_audit.sources.images import load_image

THUMBNAIL = 180
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
.thumb{width:180px;height:180px;object-fit:contain;background:#f4f4f4}
.missing{width:180px;height:180px;display:flex;align-items:center;justify-content:center;background:#eee;font-size:.8rem}
.ok{color:#096b2d;font-weight:bold}.bad{color:#b00020;font-weight:bold}code{font-size:.85rem;word-break:break-all}
"""


CHANGED = "changed since attribution: this file's sha256 is not the recorded one"


def thumbnail(path: str | None, recorded_sha256: str | None = None) -> str:
    """An <img> with the image inlined as JPEG; a placeholder when the file is gone or unreadable, or when its
    sha256 is not ``recorded_sha256`` (the file was replaced since: showing it would show another image)."""
    if path:
        try:
            loaded = load_image(path)
            if recorded_sha256 is not None and loaded.sha256 != recorded_sha256:
                return f'<div class="missing bad">{CHANGED}</div>'
            image = loaded.image
            image.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            data = base64.b64encode(buffer.getvalue()).decode()
            return f'<img class="thumb" alt="{html.escape(Path(path).name)}" src="data:image/jpeg;base64,{data}">'
        except ImageError:
            pass
    return '<div class="missing">image not available</div>'


def render_request_html(attribution: Attribution, images: dict[int, tuple[str, str]], intact: bool) -> str:
    """The page of one request: ``images`` maps a neighbour's rank to its work's image and recorded sha256,
    ``intact`` says whether the record still matches its hash. An image file that changed since is not shown."""
    e = html.escape

    def fmt(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = "".join(
        f"<tr><td>{n.rank}</td><td>{thumbnail(*images.get(n.rank, (None, None)))}</td><td>{e(n.canonical_artist)}"
        + (f"<br><small>recorded as {e(n.artist)}</small>" if n.artist != n.canonical_artist else "")
        + f"</td><td>{e(n.work_id)}<br><small>{e(n.catalogue)}, version {n.work_version or '-'}</small></td>"
        f"<td>{fmt(n.similarity)}</td><td>{fmt(n.distance)}</td><td>{n.share:.6f}</td></tr>"
        for n in attribution.neighbours
    )
    shares = "".join(f"<tr><td>{e(a)}</td><td>{s:.6f}</td></tr>" for a, s in attribution.artist_shares.items())
    metrics = {
        "artist-diversity entropy": fmt(attribution.entropy, 3),
        "nearest-neighbour distance": fmt(attribution.nn_distance),
        "margin (best vs second artist)": fmt(attribution.margin),
        "top artist": e(attribution.top_artist or "-"),
        "top artist's share": fmt(attribution.top_artist_share, 6),
        "overlap@K with exact search": fmt(attribution.overlap_at_k, 3),
        "confidence": f"{attribution.confidence:.3f} ({e(attribution.confidence_model)})",
    }
    provenance = {
        "request id": attribution.request_id,
        "created (UTC)": attribution.created_at.isoformat(),
        "requester": attribution.requester,
        "image sha256": attribution.image_sha256,
        "embedder": attribution.embedder_fingerprint,
        "store / collection": f"{attribution.store_kind} / {attribution.collection}",
        "catalogue version": attribution.catalogue_version,
        "index parameters": json.dumps(attribution.index_params, sort_keys=True),
        "attribution parameters": json.dumps(attribution.parameters, sort_keys=True),
        "chain position (seq)": str(attribution.seq),
        "previous record hash": attribution.prev_hash,
        "record hash": attribution.record_hash,
    }
    status = (
        '<span class="ok">intact: the stored hash matches the record</span>'
        if intact
        else '<span class="bad">MODIFIED: the record does not match its stored hash</span>'
    )

    def table(items: dict[str, str], code: bool = False) -> str:
        wrap = (lambda v: f"<code>{e(v)}</code>") if code else (lambda v: v)
        return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{wrap(v)}</td></tr>" for k, v in items.items()) + "</table>"

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Attribution {e(attribution.request_id)}</title>
<style>{STYLE}</style></head><body>
<h1>Attribution of {e(Path(attribution.image).name)}</h1>
<p>Record integrity: {status}</p>
<table><tr><th>generated image</th>
<td>{thumbnail(attribution.image, attribution.image_sha256)}<br><small>{e(attribution.image)}</small></td></tr></table>
<h2>The {len(attribution.neighbours)} nearest works (K = {attribution.k})</h2>
<table><tr><th>rank</th><th>work</th><th>artist</th><th>work id</th>
<th>similarity</th><th>distance</th><th>share</th></tr>
{rows}</table>
<h2>Shares per artist</h2><table><tr><th>artist</th><th>share</th></tr>{shares}</table>
<h2>Indicators</h2>{table(metrics)}
<h2>Parameters, fingerprints and hash</h2>{table(provenance, code=True)}
<p><small>Nearest-neighbour attribution measures similarity in the embedder's space; it is not proof of training
use, and the embedder captures content more than style (PEReN research note). Verify the whole log with
<code>attribution-audit audit verify</code>.</small></p>
</body></html>
"""


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
