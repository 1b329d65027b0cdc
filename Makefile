# zopg: `make bench` and `make test` set up .venv themselves (from pyproject.toml) and then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# JAX_EXTRA=cuda12 (or cuda13) also installs JAX for NVIDIA GPUs: `make bench JAX_EXTRA=cuda12`.
JAX_EXTRA ?=
comma  := ,
EXTRAS := dev$(if $(JAX_EXTRA),$(comma)$(JAX_EXTRA))
# One stamp per extra, so a change of JAX_EXTRA re-installs.
STAMP  := $(VENV)/.installed$(if $(JAX_EXTRA),-$(JAX_EXTRA))

.PHONY: docs lm compare tune regimes regimes-design regime-controls sign rates bench bench-quick bench-control bench-control-probe bench-throughput bench-sample-efficiency mutation test test-all lint format clean-venv

# Re-install whenever pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "zopg needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed $(VENV)/.installed-*
	@touch $(STAMP)

# The paper comparison (benchmarks/paper_gridworld.toml) -> results/paper_gridworld/.
bench: $(STAMP)
	$(VENV)/bin/zopg run paper_gridworld

# A few seeds and a short budget, for trying things out.
bench-quick: $(STAMP)
	$(VENV)/bin/zopg run quick_gridworld

# Every method on gymnax CartPole-v1 and ZPG on brax inverted_pendulum (benchmarks/control.toml)
# -> results/control/; the probe behind its settings (benchmarks/control_probe.toml) ->
# results/control_probe/ with `make bench-control-probe`.
bench-control: $(STAMP)
	$(VENV)/bin/zopg run control

bench-control-probe: $(STAMP)
	$(VENV)/bin/zopg run control_probe

# Where reward inference can fail (benchmarks/regime_*.toml): the five regimes built so that it
# can, the over-optimisation report (drop heights, gold against sqrt KL) and every panel in
# results/regimes/summary.md. Each alone: `zopg run regime_link_stakes` etc. The computation
# behind their layouts (a search over layouts, slips and horizons; trains nothing) is
# `make regimes-design` -> results/regimes/design.json; the experiments do not read it.
REGIMES := richer_policy link_stakes hidden_context overoptimisation dimension_padded
regimes: $(STAMP)
	for regime in $(REGIMES); do $(VENV)/bin/zopg run regime_$$regime || exit 1; done
	$(PY) -m benchmarks.reports.overoptimisation_report
	$(PY) -m benchmarks.reports.results_tables regimes

regimes-design: $(STAMP)
	$(PY) -m benchmarks.studies.regime_design

# The well-specified controls: the first regimes, where a refitted r(s, a) is a compatible critic
# and reward inference should not fail, one panel of each again with the paper comparison's
# tuned settings (regime_tuned), the refitting control beside the over-optimisation regime
# (distribution_shift) and the old dimension regime (layout and horizon change with d).
REGIME_CONTROLS := link_shape non_markov stochasticity smoothness tuned distribution_shift dimension
regime-controls: $(STAMP)
	for regime in $(REGIME_CONTROLS); do $(VENV)/bin/zopg run regime_$$regime || exit 1; done
	$(PY) -m benchmarks.reports.results_tables regimes

# Sign methods for an unknown link (ZSPO, Par-S2ZPO) and their baselines
# (benchmarks/sign_*.toml, par_s2zpo.toml) -> results/sign_*/, results/par_s2zpo/.
SIGN := sign_unknown_link sign_d_by_n par_s2zpo sign_cartpole
sign: $(STAMP)
	for experiment in $(SIGN); do $(VENV)/bin/zopg run $$experiment || exit 1; done
	$(PY) -m benchmarks.reports.results_tables sign

# Equal tuning effort (zopg tune): every budget-matched method of the paper comparison, of the
# control benchmark, of the unknown-link comparison and of the token family (lm_methods) gets
# the same trials on tuning envs, at the budget it is evaluated at -> benchmarks/tuned/*.toml
# (which those experiments include) and results/tune/*/trials.json; then the speed of a vmapped batch of trials against trial by
# trial -> results/tune_speed.json.
tune: $(STAMP)
	$(VENV)/bin/zopg tune paper_gridworld
	$(VENV)/bin/zopg tune control
	$(VENV)/bin/zopg tune sign_unknown_link
	$(VENV)/bin/zopg tune lm_methods
	$(PY) -m benchmarks.speed.tune_speed

# Rollout and ZPG throughput against NumPy baselines -> results/throughput.json.
bench-throughput: $(STAMP)
	$(PY) -m benchmarks.speed.throughput

# Queries the default ZPG/ZBCPG need for 50% / 90% of the gap: the runs of
# benchmarks/sample_efficiency.toml, then their crossings -> results/sample_efficiency.json.
bench-sample-efficiency: $(STAMP)
	$(VENV)/bin/zopg run sample_efficiency
	$(PY) -m benchmarks.reports.sample_efficiency

# Paired comparisons of every committed results folder (zopg compare: paired sign-flip tests
# over shared seeds, Holm over the folder where its seeds can resolve that many comparisons,
# else within each panel) -> results/*/comparisons.json, then the generated
# tables and verdicts of the README and docs/ from them (benchmarks/reports/readme_tables.py).
compare: $(STAMP)
	for summary in results/*/summary.json; do \
		dir=$$(dirname $$summary); \
		$(VENV)/bin/zopg compare $$dir --family auto > /dev/null || exit 1; \
	done
	$(PY) -m benchmarks.reports.readme_tables

# The language-model-like family (docs/concepts.md, "The reference, the gold and the proxies"):
# best-of-n by proxies of four capacities and an ensemble, fitted on 250 to 16,000 gold-labelled
# reference pairs, judged by both gold utilities -> results/lm_overoptimisation/ (about 25
# minutes on the 2-core CPU; resumes by part); REINFORCE on those proxies and offline DPO/IPO on
# those pairs (about 25 minutes). Then every budget-matched method at 50,000 queries on LoRA
# adapters of the SFT GRU (benchmarks/lm_methods.toml, tuned by `zopg tune lm_methods`; about
# 20 minutes) -> results/lm_methods/, its paired comparisons and lm_methods.json; then ZPG and
# ZSPO with those settings on five parameterisations, 752 to 20,304 perturbed parameters
# (benchmarks/lm_dimension.toml, about 3 minutes) -> results/lm_dimension/. The SFT references
# are shipped; `$(PY) -m benchmarks.studies.sft_references` trains missing ones.
lm: $(STAMP)
	$(PY) -m benchmarks.studies.lm_overoptimisation
	$(PY) -m benchmarks.studies.lm_overoptimisation_policies
	$(VENV)/bin/zopg run lm_methods
	$(VENV)/bin/zopg compare results/lm_methods --family auto > /dev/null
	$(PY) -m benchmarks.reports.lm_methods_report
	$(VENV)/bin/zopg run lm_dimension
	$(VENV)/bin/zopg compare results/lm_dimension --family auto > /dev/null
	$(PY) -m benchmarks.reports.lm_dimension_report

# Convergence-rate sweeps (benchmarks/rates/*.toml) -> results/rates/rates.json and figures.
rates: $(STAMP)
	$(PY) -m zopg.rates

# The docs site (docs/, mkdocs.yml) -> site/; --strict: a broken link or reference fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Mutation testing of the core (benchmarks/studies/mutation.py): mutmut mutates exact values, the
# estimators, links, oracle, zeroth-order and sign methods, DPO losses, budget accounting and
# paired statistics, each against its own tests, in scratch copies under mutants/ ->
# results/mutation.json. Hours on the 2-core CPU; interrupted, it resumes. Not part of `make test`.
mutation: $(STAMP)
	$(PY) -m benchmarks.studies.mutation

# Slow tests (brax locomotion, other brax backends) are marked; `make test-all` includes them.
# Test files run in parallel, one worker per core: most of the suite's time is XLA compiling,
# which uses one core. Whole files go to one worker, so a module's fixtures are built once.
PYTEST := $(PY) -m pytest -q -n auto --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
