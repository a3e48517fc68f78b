"""Renderers of what the audit log holds: aligned tables/CSV/JSON, one request as an HTML page, the export file."""
