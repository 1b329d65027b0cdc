"""Equal tuning effort: declared search spaces and `zopg tune` (science.md §10)."""
