"""The docs stay true to the code: generated CLI reference, help texts, README commands and settings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import attribution_audit.config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _load_cli_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli_reference = _load_cli_reference()
COMMANDS = list(cli_reference.iter_commands())


def test_cli_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == cli_reference.render(), "docs/cli.md is stale: run `python scripts/cli_reference.py`"


def test_cli_reference_has_no_terminal_codes() -> None:
    text = cli_reference.render()
    assert "\x1b" not in text
    assert not re.search(r"[\u2500-\u257f]", text), "box-drawing characters: rich formatting leaked in"


def test_cli_reference_covers_every_command() -> None:
    text = cli_reference.render()
    paths = [ctx.command_path for _, ctx in COMMANDS]
    assert {"attribution-audit ingest", "attribution-audit attribute", "attribution-audit db upgrade"} <= set(paths)
    for path in paths:
        assert f"## `{path}`" in text


@pytest.mark.parametrize(("command", "ctx"), COMMANDS, ids=[ctx.command_path for _, ctx in COMMANDS])
def test_every_command_has_help(command: Any, ctx: Any) -> None:
    help_text = command.help or ""
    assert help_text.strip(), f"`{ctx.command_path}` has no help text"


def _fenced_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)]


def test_readme_starts_with_make_demo_then_make_test() -> None:
    blocks = _fenced_blocks(README.read_text(encoding="utf-8"))
    assert blocks[:2] == ["make demo", "make test"]


def test_readme_commands_come_right_after_title_and_one_sentence() -> None:
    lines = [line for line in README.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert not lines[1].startswith(("#", "```")), "one sentence between the title and the commands"
    assert lines[2].startswith("```"), "the first command follows the one sentence"


def _config_env_vars() -> set[str]:
    source = Path(attribution_audit.config.__file__).read_text(encoding="utf-8")
    prefix = attribution_audit.config.ENV_PREFIX
    names = set(re.findall(re.escape(prefix) + r"[A-Z0-9_]+", source))
    names |= {prefix + suffix for suffix in re.findall(r"\{ENV_PREFIX\}([A-Z0-9_]+)", source)}
    names |= {prefix + suffix for suffix in re.findall(r"_count\(\"([A-Z0-9_]+)\"", source)}
    names |= {prefix + suffix.upper() for suffix in re.findall(r"_whole\(env, \"([a-z0-9_]+)\"\)", source)}
    return names - {prefix}


def test_every_setting_env_var_is_documented_in_readme() -> None:
    """Every variable config.py reads has its row in the README's Configuration table, where a user looks."""
    names = _config_env_vars()
    assert {"ATTRIBUTION_AUDIT_COPY_DEPTH", "ATTRIBUTION_AUDIT_SHARD_NUMBER"} <= names  # the regexes still find them
    configuration = README.read_text(encoding="utf-8").split("\n## Configuration\n")[1].split("\n## ")[0]
    missing = sorted(name for name in names if f"`{name}`" not in configuration)
    assert not missing, f"README.md's Configuration section does not document {missing}"


def _schema_sections() -> dict[str, str]:
    text = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    parts = re.split(r"^### `([a-z_]+)`\s*$", text, flags=re.M)
    return {name: body.split("\n## ")[0] for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_schema_doc_describes_every_table_and_column() -> None:
    from attribution_audit.store.models import Base

    sections = _schema_sections()
    missing = []
    for table in Base.metadata.sorted_tables:
        if table.name not in sections:
            missing.append(table.name)
            continue
        missing += [f"{table.name}.{c.name}" for c in table.columns if f"`{c.name}`" not in sections[table.name]]
    assert not missing, f"docs/schema.md does not describe {missing}"


def test_schema_doc_lists_every_reporting_view() -> None:
    from attribution_audit.store.reports import REPORTING_VIEWS

    text = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert not [view for view in REPORTING_VIEWS if f"`{view}`" not in text]


def test_schema_doc_lists_every_revision_and_the_learned_spaces_validation_keys() -> None:
    """The revision table stopped at 0015 with 0006-0010 and 0012-0014 missing; the validation's ``artists`` and
    ``confidence`` were not described."""
    from attribution_audit.store.spaces import ARTISTS

    text = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    table = text.split("| revision | what it does |")[1].split("\n\n")[0]
    revisions = sorted(p.name[:4] for p in (ROOT / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert re.findall(r"^\| `(\d{4})` \|", table, flags=re.M) == revisions
    validation = next(line for line in _schema_sections()["learned_spaces"].splitlines() if "| `validation` |" in line)
    assert f"`{ARTISTS}`" in validation and "`confidence`" in validation


def test_readme_names_every_top_level_command() -> None:
    readme = README.read_text(encoding="utf-8")
    root, _ = COMMANDS[0]
    missing = [name for name in root.commands if f"`{name}" not in readme]
    assert not missing, f"README.md's CLI reference table does not list {missing}"


def test_architecture_names_every_package_and_the_readme_links_it() -> None:
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    package = ROOT / "attribution_audit"
    parts = sorted(
        f"{path.name}/" if path.is_dir() else path.name
        for path in package.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or path.name in {"config.py", "errors.py"}
    )
    missing = [part for part in parts if part not in architecture]
    assert not missing, f"ARCHITECTURE.md does not place {missing} in a layer"
    assert "(ARCHITECTURE.md)" in README.read_text(encoding="utf-8")


def test_the_docs_cite_commands_a_reader_can_run_not_this_machine_paths() -> None:
    """docs/quality.md cited a helper's interpreter and folders (/work/main/.venv/bin/python, /work/q/centroid/...,
    its run.sh) in its commands; a reader runs the benchmark scripts on their own build."""
    found = re.findall(r"/work/\S*|\brun\.sh\b", (ROOT / "docs" / "quality.md").read_text())
    assert not found, found
    for doc in sorted((ROOT / "docs").glob("*.md")):  # the benchmarks' Command lines name no interpreter path
        assert not re.search(r"`/\S*/bin/python ", doc.read_text()), doc.name
