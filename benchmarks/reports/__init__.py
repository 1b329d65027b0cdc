"""Reports: scripts that only read results folders and write tables, figures and summaries."""
