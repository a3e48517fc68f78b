"""The research note's statistics (curves vs K, Table 1 tests, confidence quality, HNSW vs exact) and their files."""
