"""Train the SFT references zopg ships (zopg/lm/data/): the GRU and the transformer on the
default token environment, each with the default training settings.

    .venv/bin/python -m benchmarks.studies.sft_references

A reference is deterministic given its settings on one machine; another CPU may round
differently, which is why the arrays are shipped rather than retrained at first use.
"""

from __future__ import annotations

import sys

from zopg.envs import make
from zopg.lm.reference import SHIPPED, SFTSettings, reference_name, save_reference, train_reference
from zopg.policies import make_policy

ENV_ID = "tokens/hmm-v16-l16"
POLICIES = ("gru", "transformer")


def main() -> int:
    env, env_params = make(ENV_ID)
    settings = SFTSettings()
    for name in POLICIES:
        policy = make_policy(name, env, env_params)
        params, record = train_reference(env, env_params, policy, settings, log=print)
        path = SHIPPED / (reference_name(env_params, policy, settings) + ".npz")
        save_reference(path, params, record)
        gap = record["nll_per_token"] - record["hmm_nll_per_token"]
        print(
            f"{path.name}: NLL {record['nll_per_token']:.4f} nats/token, {gap:+.4f} from the "
            f"HMM's, {record['seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
