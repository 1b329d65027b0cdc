"""Studies: scripts that compute a result by training or by exact computation."""
