"""The command line: thin adapters over the services, one module per command group (see ARCHITECTURE.md)."""

from attribution_audit.cli.app import app

__all__ = ["app"]
