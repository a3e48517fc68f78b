"""Pure code: parameters, spaces, ranking, indicators, shares, confidence, results and chain hashing (no I/O)."""
