"""``python -m attribution_audit`` runs the CLI."""

from attribution_audit.cli import app

app(prog_name="attribution-audit")
