"""Speed benchmarks: rollout and training throughput, vmapped tuning, the GPU check."""
