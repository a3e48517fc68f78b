"""The audit database: models, migrations, and the repository the rest of the code writes through."""
