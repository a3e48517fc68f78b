"""Use cases, one per module, over the stores, embedders and sources; wiring from settings in ``wiring``."""
