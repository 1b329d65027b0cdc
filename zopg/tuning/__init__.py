"""Equal tuning effort: declared search spaces and `zopg tune` (algorithms.md §10)."""
