"""Write an evaluation's results: metrics.json, CSV tables, report.md and PNG plots (matplotlib, headless)."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.errors import AttributionAuditError
from attribution_audit.reporting.tables import csv_cell

TABLE1_COLUMNS = {
    "true_artist_present": "Real artist present",
    "nn_by_true_artist": "Nearest neighbour from the real artist",
    "only_true_artist": "Real artist only",
}
CURVE_KEYS = ("hit_rate", "artist_precision", "artist_recall", "work_precision", "work_recall")
EXACT_NAMES = {"brute": "brute force", "kdtree": "KD-Tree", "hnsw": "HNSW"}
TABLE1_ROWS = {
    "diversity": "Hypothesis 1: diversity of artists",
    "distance": "Hypothesis 2: distance to the nearest neighbour",
}


def check_out(out: str | Path) -> None:
    """Refuse, before an experiment runs, an ``--out`` that cannot become a writable folder (creates nothing)."""
    existing = Path(out).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise AttributionAuditError(f"{out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AttributionAuditError(f"{out}: cannot write in {existing} (permission denied); choose another --out")


@contextmanager
def _folder(out: str | Path, run_id: Any = None) -> Iterator[Path]:
    """``out``, created; an OSError while writing into it becomes one line (saying the run is recorded)."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    except OSError as exc:
        recorded = f"; evaluation run {run_id} is recorded (evaluate list shows it)" if run_id is not None else ""
        raise AttributionAuditError(
            f"{out}: cannot write the results ({exc.strerror or exc}); choose another --out{recorded}"
        ) from None


def _fmt(value: Any, digits: int = 3, why: str = "") -> str:
    """A number for people; None is "n/a", with the reason when one is given."""
    if value is None:
        return f"n/a ({why})" if why else "n/a"
    if isinstance(value, float):
        return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "N/A (every image of this class has entropy 0: one artist)"
    n = f"(n = {cell['n_positive']}/{cell['n_negative']})"
    if not (cell["n_positive"] and cell["n_negative"]):
        return f"n/a: no image in one class {n}"
    if cell["p_value"] is None:
        return f"n/a: every image has the same value {n}; AUROC {_fmt(cell['auroc'])}"
    return f"p = {_fmt(cell['p_value'])}, AUROC {_fmt(cell['auroc'])} {n}"


def _unavailable(quality: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Why some queries' confidence is not scored (runs computed before it was counted have no count), or ""."""
    left = quality.get("unavailable")
    if not left:
        return ""
    read = ", ".join(f"{name} ({n})" for name, n in quality["unavailable_indicators"].items())
    depth = metrics.get("recorded_k", metrics["k_max"])
    return (
        f" {left} quer{'y is' if left == 1 else 'ies are'} left out: the model reads {read}, which their logged "
        f"requests (K={depth}) do not tell at K={metrics['k']} (the agreements are measured at the request's K, "
        "the centroid log-odds for its top artist only, and K may name another); a run with --k-max and --k "
        f"{depth} scores every query."
    )


def _per_image_k(block: dict[str, Any]) -> str:
    result = block["per_image_k"]
    if not result["queries"]:
        return _fmt(result["precision"], why="no query has true works")
    why = f"{result.get('short')} queries have more true works than neighbours were recorded; rerun evaluate run"
    return _fmt(result["precision"], why=why)


NO_QUERY = "no query could be attributed"
NO_ARTIST_WORKS = "no true artist has works in the catalogue, or the run predates artist recall"


def metric_groups(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Overall, then each subset by name; a subset named "overall" is shown as "subset overall" (never in its
    place)."""
    subsets = {f"subset {name}" if name == "overall" else name: block for name, block in metrics["subsets"].items()}
    return {"overall": metrics["overall"], **subsets}


def write_tables(metrics: dict[str, Any], out: Path) -> list[Path]:
    """curves.csv (one row per group and K) and table1.csv (one row per group, hypothesis and class)."""
    curves_path, table_path = out / "curves.csv", out / "table1.csv"
    with curves_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "k", *CURVE_KEYS])
        for group, block in metric_groups(metrics).items():
            for row in block["curves"]:
                writer.writerow([csv_cell(group), row["k"], *(row.get(key) for key in CURVE_KEYS)])
    with table_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "hypothesis", "class", "p_value", "auroc", "u", "n_positive", "n_negative"])
        for group, block in metric_groups(metrics).items():
            for hypothesis, cells in block["table1"].items():
                for name, cell in cells.items():
                    if cell is not None:
                        writer.writerow(
                            [
                                csv_cell(group),
                                hypothesis,
                                name,
                                cell["p_value"],
                                cell["auroc"],
                                cell.get("u"),
                                cell["n_positive"],
                                cell["n_negative"],
                            ]
                        )
    return [curves_path, table_path]


def _curve(block: dict[str, Any], key: str) -> list[float]:
    return [row.get(key) if row.get(key) is not None else float("nan") for row in block["curves"]]


def write_plots(metrics: dict[str, Any], out: Path) -> list[Path]:
    """hit_rate.png (the note's Figure 4) and precision_recall.png (Figure 5: precision and recall, work level and
    artist level), one line per group and measure, the chosen K marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = metric_groups(metrics)
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for group, block in groups.items():
        axis.plot([row["k"] for row in block["curves"]], _curve(block, "hit_rate"), label=_label(group))
    _finish(axis, metrics["k"], "share of images with the true artist among the K works")
    axis.set_title("Images with at least one work by the true artist, against K", fontsize=10)
    figure.tight_layout()
    figure.savefig(out / "hit_rate.png")
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    for axis, level, title in (
        (axes[0], "work", "Work level: the true inspiration works"),
        (axes[1], "artist", "Artist level: works by the true artist"),
    ):
        drawn = False
        for colour, (group, block) in enumerate(groups.items()):
            ks = [row["k"] for row in block["curves"]]
            for measure, style in (("precision", "-"), ("recall", "--")):
                values = _curve(block, f"{level}_{measure}")
                if any(v == v for v in values):  # not all NaN
                    axis.plot(ks, values, style, color=f"C{colour}", label=f"{_label(group)}: {measure}")
                    drawn = True
        if not drawn:
            reason = "no query has true works" if level == "work" else "no true artist has works in the catalogue"
            axis.text(0.5, 0.5, f"n/a: {reason}", ha="center", va="center", transform=axis.transAxes)
        _finish(axis, metrics["k"], "mean precision or recall")
        axis.set_title(title, fontsize=10)
    figure.suptitle("Precision and recall against K", fontsize=11)
    figure.tight_layout()
    figure.savefig(out / "precision_recall.png")
    plt.close(figure)
    return [out / "hit_rate.png", out / "precision_recall.png"]


def _label(group: str) -> str:
    return "all images" if group == "overall" else group if group == "subset overall" else f"subset {group}"


def _finish(axis: Any, k: int, ylabel: str) -> None:
    """Axis labels, the chosen K marked, a legend in words."""
    axis.axvline(k, color="grey", linestyle=":", label=f"chosen K = {k}")
    axis.set_xlabel("K (number of attributed works)")
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def render_markdown(metrics: dict[str, Any]) -> str:
    """report.md: the headline numbers, Table 1 as in the note, confidence quality, HNSW vs exact."""
    lines = [f"# Evaluation run {metrics['run_id']}", ""]
    lines += [
        f"K max {metrics['k_max']}; fixed K {metrics['k']} (Table 1 uses K = number of true works when known); "
        f"confidence model {metrics['confidence_model']}.",
        "",
    ]
    lines += [
        "| group | queries | hit rate@1 | hit rate@K | artist precision@K | artist recall@K | "
        "per-image-K precision (= recall) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, block in metric_groups(metrics).items():
        curves = block["curves"]
        at_k = curves[min(metrics["k"], len(curves)) - 1]
        lines.append(
            f"| {group} | {block['queries']} | {_fmt(curves[0]['hit_rate'], why=NO_QUERY)} | "
            f"{_fmt(at_k['hit_rate'], why=NO_QUERY)} | {_fmt(at_k['artist_precision'], why=NO_QUERY)} | "
            f"{_fmt(at_k.get('artist_recall'), why=NO_ARTIST_WORKS)} | {_per_image_k(block)} |"
        )
    for group, block in metric_groups(metrics).items():
        lines += ["", f"## Table 1 ({group}): Mann-Whitney U tests", ""]
        lines += ["| | " + " | ".join(TABLE1_COLUMNS.values()) + " |", "|---|" + "---|" * len(TABLE1_COLUMNS)]
        for key, label in TABLE1_ROWS.items():
            cells = block["table1"][key]
            lines.append(f"| {label} | " + " | ".join(_cell(cells.get(c)) for c in TABLE1_COLUMNS) + " |")
        quality = block["confidence"]
        none = NO_QUERY if not quality.get("unavailable") else "no query's confidence at K is known"
        one_class = none if not quality["queries"] else "the top artist is right for every image or for none"
        lines += [
            "",
            f'Confidence at K={metrics["k"]} for "top artist correct" '
            f"(accuracy {_fmt(quality['accuracy'], why=none)}): "
            f"AUROC {_fmt(quality['auroc'], why=one_class)}, Brier {_fmt(quality['brier'], why=none)}, "
            f"ECE {_fmt(quality['ece'], why=none)}.{_unavailable(quality, metrics)}",
        ]
    ann = metrics["ann_vs_exact"]
    if ann.get("queries"):
        recall = ", ".join(f"@{k} {_fmt(v)}" for k, v in ann["recall_at_k"].items())
        lines += [
            "",
            f"## HNSW vs exact search ({EXACT_NAMES.get(ann.get('exact_method', 'brute'), 'exact')})",
            "",
            f"Recall of HNSW against exact: {recall}. Latency p50: HNSW {_fmt(ann['hnsw_ms']['p50'], 2)} ms, "
            f"exact {_fmt(ann['exact_ms']['p50'], 2)} ms (exact / HNSW = {_fmt(ann['exact_over_hnsw_p50'], 1)}).",
        ]
    lines += ["", "![hit rate](hit_rate.png)", "", "![precision and recall](precision_recall.png)", ""]
    return "\n".join(lines)


def write_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """Write every output file into ``out``; returns their paths."""
    with _folder(out, metrics.get("run_id")) as folder:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (folder / "report.md").write_text(render_markdown(metrics))
        return [
            folder / "metrics.json",
            folder / "report.md",
            *write_tables(metrics, folder),
            *write_plots(metrics, folder),
        ]


def write_noise_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """noise.json, noise.csv and noise.png (mean overlap vs level)."""
    import csv
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _folder(out, metrics.get("run_id")) as folder:
        (folder / "noise.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        with (folder / "noise.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["kind", "level", "noise_works", "mean_overlap", "noise_in_top_k"])
            for row in metrics["levels"]:
                writer.writerow(
                    [metrics["kind"], row["level"], row["noise_works"], row["mean_overlap"], row["noise_in_top_k"]]
                )
        figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
        levels = [100 * row["level"] for row in metrics["levels"]]
        axis.plot(
            levels, [row["mean_overlap"] for row in metrics["levels"]], marker="o", label=f"{metrics['kind']} noise"
        )
        axis.set_xlabel(f"noise added (% of the {metrics['index_size']}-work reference index)")
        axis.set_ylabel(f"mean overlap with the clean top {metrics['k']}")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(folder / "noise.png")
        plt.close(figure)
        return [folder / "noise.json", folder / "noise.csv", folder / "noise.png"]


def write_comparison(rows: list[dict[str, Any]], shown: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """compare.json (the raw rows) and compare.md (the rows as shown) of ``evaluate compare-spaces``."""
    from attribution_audit.reporting.tables import render_rows

    with _folder(out, None) as folder:
        (folder / "compare.json").write_text(json.dumps(rows, indent=2))
        table = render_rows(shown, "csv").splitlines()
        markdown = ["| " + " | ".join(line.split(",")) + " |" for line in table]
        markdown.insert(1, "|" + "---|" * len(table[0].split(",")))
        (folder / "compare.md").write_text("\n".join(markdown) + "\n")
        return [folder / "compare.json", folder / "compare.md"]


def write_content_bias_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """content_bias.json, content_bias.md and one histogram per group (content_bias_<group>.png), as the note's
    Figure 8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _folder(out, metrics.get("run_id")) as folder:
        (folder / "content_bias.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        lines = [
            f"# Content of attributed works vs true inspiration works (evaluation run {metrics['run_id']})",
            "",
            f"Attribution space: {metrics['space']}; K = each image's number of true works. Content from the "
            f"{metrics['content_source']}: {metrics['content_source_reason']}.",
            *(["", f"**Caveat:** {metrics['caveat']}."] if metrics.get("caveat") else []),
            "",
            "| group | queries | pairs attributed / inspiration | mean similarity attributed | mean similarity "
            "inspiration | Mann-Whitney U | p |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        paths = [folder / "content_bias.json", folder / "content_bias.md"]
        images = []
        for group, block in metric_groups(metrics).items():
            attributed, inspiration = block["attributed"], block["inspiration"]
            p_value = (
                _fmt(block["p_value"]) if block["p_value"] is not None else "n/a (a side empty, or all values equal)"
            )
            lines.append(
                f"| {group} | {block['queries']} | {attributed['n']} / {inspiration['n']} | "
                f"{_fmt(attributed['mean'])} | {_fmt(inspiration['mean'])} | {_fmt(block['u'])} | {p_value} |"
            )
            figure, axis = plt.subplots(figsize=(6.5, 4), dpi=110)
            values = [attributed["values"], inspiration["values"]]
            bins = np.histogram_bin_edges([v for side in values for v in side] or [0.0, 1.0], bins=20).tolist()
            axis.hist(values[0], bins=bins, alpha=0.6, label="attributed works")
            axis.hist(values[1], bins=bins, alpha=0.6, label="true inspiration works")
            axis.set_xlabel(f"cosine similarity of content to the generated image ({metrics['content_source']})")
            axis.set_ylabel("number of (generated image, work) pairs")
            axis.set_title(f"{group}: Mann-Whitney p = {_fmt(block['p_value'])}", fontsize=10)
            axis.legend(loc="upper left")  # (placing it "best" over many bars took seconds and warned)
            figure.tight_layout()
            png = folder / f"content_bias_{re.sub(r'[^A-Za-z0-9_-]', '_', group)}.png"
            figure.savefig(png)
            plt.close(figure)
            paths.append(png)
            images += ["", f"![{group}]({png.name})"]
        lines += [
            *images,
            "",
            "A difference says the two sets differ in content; as the note says, it does not formally prove that works "
            "are attributed because of their content.",
            "",
        ]
        (folder / "content_bias.md").write_text("\n".join(lines))
        return paths


def exact_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The appendix table of ``evaluate compare-exact``: one flat row per method."""
    k = metrics["k"]
    return [
        {
            "method": EXACT_NAMES[row["method"]],
            f"recall@{k} vs brute force": row["recall_vs_brute"],
            "p50 ms": row["latency_ms"]["p50"],
            "p95 ms": row["latency_ms"]["p95"],
            "build ms": row["build_ms"],
        }
        for row in metrics["methods"]
    ]


def write_compare_exact(metrics: dict[str, Any], shown: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """compare_exact.json and compare_exact.md (the table, with what was measured and how)."""
    with _folder(out, metrics.get("run_id")) as folder:
        (folder / "compare_exact.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        columns = list(shown[0])
        lines = [
            f"# HNSW vs KD-Tree vs brute force (evaluation run {metrics['run_id']})",
            "",
            f"{metrics['queries']} queries, K = {metrics['k']}, {metrics['space']} space, {metrics['index_size']} "
            f"vectors of dimension {metrics['dimension']}. Brute force is the ground truth; latency is one query at a "
            "time; HNSW's build time is n/a: its index is the collection's, built at ingestion.",
            "",
            "| " + " | ".join(columns) + " |",
            "|---|" + "---:|" * (len(columns) - 1),
            *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in shown),
            "",
        ]
        (folder / "compare_exact.md").write_text("\n".join(lines))
        return [folder / "compare_exact.json", folder / "compare_exact.md"]
