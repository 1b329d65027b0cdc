#!/usr/bin/env bash
# Every GPU measurement in one run (benchmarks/speed/gpu_check.py): ZPG on GridWorld and CartPole,
# GridWorld rollouts, and ZPG on the token GRU against bare sampling (tokens_zpg) at GPU sizes
# beside their baselines, and `make bench-quick`'s wall time.
#
#   bash benchmarks/speed/gpu_check.sh [OUT_JSON (results/throughput_gpu.json)] [gpu_check options]
#   QUICK=1 PYTHON=.venv/bin/python bash benchmarks/speed/gpu_check.sh /tmp/throughput_gpu.json
#
# QUICK=1 runs the throughput scripts' --quick sizes, to check the script on a CPU. The project
# runs from the working tree: missing packages (gymnax and its needs) may come first on
# PYTHONPATH, e.g. wheels installed with `pip install --target`.
set -uo pipefail
# The repository root: `python -m benchmarks.speed.gpu_check` and `zopg run NAME` resolve from it.
cd "$(dirname "$0")/../.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
out=${1:-results/throughput_gpu.json}
shift $(($# > 0 ? 1 : 0))
args=(--out "$out")
if [[ ${QUICK:-0} == 1 ]]; then args+=(--quick); fi

# What the driver and the image say about the GPU, before JAX does.
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
fi
"$PYTHON" --version
"$PYTHON" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__)'
exec "$PYTHON" -m benchmarks.speed.gpu_check "${args[@]}" "$@"
