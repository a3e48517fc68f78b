"""Catalogue manifests and their ingestion into the vector store and the audit database."""
