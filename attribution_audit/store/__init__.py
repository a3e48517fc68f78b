"""Persistence: the audit database (``AuditStore`` owns every query), the vector stores and the exact index."""
