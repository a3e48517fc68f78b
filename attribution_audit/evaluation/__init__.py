"""The research note's experiments: curves vs K, Table 1 tests, confidence quality, HNSW vs exact, noise."""
