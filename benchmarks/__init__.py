"""Benchmarks, studies and reports of zopg, run as modules from the repository root."""
