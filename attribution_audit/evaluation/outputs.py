"""Write an evaluation's results: metrics.json, CSV tables, report.md and PNG plots (matplotlib, headless)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from attribution_audit.reporting.tables import csv_cell

TABLE1_COLUMNS = {
    "true_artist_present": "Real artist present",
    "nn_by_true_artist": "Nearest neighbour from the real artist",
    "only_true_artist": "Real artist only",
}
TABLE1_ROWS = {
    "diversity": "Hypothesis 1: diversity of artists",
    "distance": "Hypothesis 2: distance to the nearest neighbour",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "N/A"
    return f"p = {_fmt(cell['p_value'])}, AUROC {_fmt(cell['auroc'])} (n = {cell['n_positive']}/{cell['n_negative']})"


def _groups(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"overall": metrics["overall"], **metrics["subsets"]}


def write_tables(metrics: dict[str, Any], out: Path) -> list[Path]:
    """curves.csv (one row per group and K) and table1.csv (one row per group, hypothesis and class)."""
    curves_path, table_path = out / "curves.csv", out / "table1.csv"
    with curves_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "k", "hit_rate", "artist_precision", "work_precision", "work_recall"])
        for group, block in _groups(metrics).items():
            for row in block["curves"]:
                writer.writerow(
                    [
                        csv_cell(group),  # a subset name from a labelled CSV: never a spreadsheet formula
                        row["k"],
                        row["hit_rate"],
                        row["artist_precision"],
                        row["work_precision"],
                        row["work_recall"],
                    ]
                )
    with table_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "hypothesis", "class", "p_value", "auroc", "u", "n_positive", "n_negative"])
        for group, block in _groups(metrics).items():
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


def write_plots(metrics: dict[str, Any], out: Path) -> list[Path]:
    """hit_rate.png (Figure 4) and precision_recall.png (Figure 5), one line per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for filename, keys, title in (
        ("hit_rate.png", ("hit_rate",), "Share of images with the true artist among the K nearest works"),
        ("precision_recall.png", ("work_precision", "work_recall", "artist_precision"), "Precision and recall vs K"),
    ):
        figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
        for group, block in _groups(metrics).items():
            ks = [row["k"] for row in block["curves"]]
            for key in keys:
                values = [row[key] for row in block["curves"]]
                if any(v is not None for v in values):
                    axis.plot(ks, [v if v is not None else float("nan") for v in values], label=f"{group}: {key}")
        axis.set_xlabel("K (number of attributed works)")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / filename)
        plt.close(figure)
        paths.append(out / filename)
    return paths


def render_markdown(metrics: dict[str, Any]) -> str:
    """report.md: the headline numbers, Table 1 as in the note, confidence quality, HNSW vs exact."""
    lines = [f"# Evaluation run {metrics['run_id']}", ""]
    lines += [
        f"K max {metrics['k_max']}; fixed K {metrics['k']} (Table 1 uses K = number of true works when known); "
        f"confidence model {metrics['confidence_model']}.",
        "",
    ]
    lines += [
        "| group | queries | hit rate@1 | hit rate@K | artist precision@K | per-image-K precision (= recall) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group, block in _groups(metrics).items():
        curves = block["curves"]
        at_k = curves[min(metrics["k"], len(curves)) - 1]
        lines.append(
            f"| {group} | {block['queries']} | {_fmt(curves[0]['hit_rate'])} | {_fmt(at_k['hit_rate'])} | "
            f"{_fmt(at_k['artist_precision'])} | {_fmt(block['per_image_k']['precision'])} |"
        )
    for group, block in _groups(metrics).items():
        lines += ["", f"## Table 1 ({group}): Mann-Whitney U tests", ""]
        lines += ["| | " + " | ".join(TABLE1_COLUMNS.values()) + " |", "|---|" + "---|" * len(TABLE1_COLUMNS)]
        for key, label in TABLE1_ROWS.items():
            cells = block["table1"][key]
            lines.append(f"| {label} | " + " | ".join(_cell(cells.get(c)) for c in TABLE1_COLUMNS) + " |")
        quality = block["confidence"]
        lines += [
            "",
            f'Confidence at K={metrics["k"]} for "top artist correct" (accuracy {_fmt(quality["accuracy"])}): '
            f"AUROC {_fmt(quality['auroc'])}, Brier {_fmt(quality['brier'])}, ECE {_fmt(quality['ece'])}.",
        ]
    ann = metrics["ann_vs_exact"]
    if ann.get("queries"):
        recall = ", ".join(f"@{k} {_fmt(v)}" for k, v in ann["recall_at_k"].items())
        lines += [
            "",
            "## HNSW vs exact search",
            "",
            f"Recall of HNSW against exact: {recall}. Latency p50: HNSW {_fmt(ann['hnsw_ms']['p50'], 2)} ms, "
            f"exact {_fmt(ann['exact_ms']['p50'], 2)} ms (exact / HNSW = {_fmt(ann['exact_over_hnsw_p50'], 1)}).",
        ]
    lines += ["", "![hit rate](hit_rate.png)", "", "![precision and recall](precision_recall.png)", ""]
    return "\n".join(lines)


def write_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """Write every output file into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / "report.md").write_text(render_markdown(metrics))
    return [out / "metrics.json", out / "report.md", *write_tables(metrics, out), *write_plots(metrics, out)]


def write_noise_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """noise.json, noise.csv and noise.png (mean overlap vs level)."""
    import csv
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    with (out / "noise.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "level", "actual_level", "noise_works", "mean_overlap", "noise_in_top_k"])
        for row in metrics["levels"]:
            writer.writerow(
                [
                    metrics["kind"],
                    row["level"],
                    row["actual_level"],
                    row["noise_works"],
                    row["mean_overlap"],
                    row["noise_in_top_k"],
                ]
            )
    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    levels = [100 * row["actual_level"] for row in metrics["levels"]]
    axis.plot(levels, [row["mean_overlap"] for row in metrics["levels"]], marker="o", label=metrics["kind"])
    axis.set_xlabel("noise added (% of the index)")
    axis.set_ylabel(f"mean overlap with the clean top {metrics['k']}")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "noise.png")
    plt.close(figure)
    return [out / "noise.json", out / "noise.csv", out / "noise.png"]


def write_comparison(rows: list[dict[str, Any]], shown: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """compare.json (the raw rows) and compare.md (the rows as shown) of ``evaluate compare-spaces``."""
    from attribution_audit.reporting.tables import render_rows

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=2))
    table = render_rows(shown, "csv").splitlines()
    markdown = ["| " + " | ".join(line.split(",")) + " |" for line in table]
    markdown.insert(1, "|" + "---|" * len(table[0].split(",")))
    (out / "compare.md").write_text("\n".join(markdown) + "\n")
    return [out / "compare.json", out / "compare.md"]
