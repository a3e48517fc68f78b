"""Reports over the audit log: SQL-view queries, a read-only role, per-request HTML pages, verifiable exports."""
