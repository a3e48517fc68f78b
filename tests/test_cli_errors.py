"""CLI input errors that used to give tracebacks: option values refused with a usage error (exit 2), and outputs
that cannot be written reported in one line (exit 1)."""

from __future__ import annotations

from conftest import Cli


def test_cli_refuses_style_with_precomputed_vectors_and_bad_spaces(cli: Cli) -> None:
    manifest, vectors = cli.data_dir / "m.csv", cli.data_dir / "v.npy"
    for spaces, extra, message in (
        ("bogus", [], "use content or content,style"),
        ("content,style", ["--embeddings", str(vectors)], "fill content only"),
    ):
        result = cli("ingest", str(manifest), "--spaces", spaces, *extra, code=2)
        assert message in result.output


def test_unwritable_outputs_are_one_line(cli: Cli) -> None:
    result = cli("audit", "export", "/proc/nope/x.jsonl", code=1)
    assert "cannot write the export" in result.stderr
