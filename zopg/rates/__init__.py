"""Convergence rates (science.md §8): settings, measurements, sweep files, fits and figures.

setting.py builds the tabular problems with exact values; measurements.py measures one quantity
over a grid per seed; sweeps.py reads the sweep files (benchmarks/rates/*.toml); fits.py and
analysis.py fit log-log slopes with seed-bootstrap CIs; plots.py draws them; run.py (`python -m
zopg.rates`, `make rates`) runs every sweep into results/rates/.
"""
