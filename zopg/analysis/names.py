"""Display names of methods, the one mapping that figures and the README/docs tables share."""

from __future__ import annotations

# Every built-in algorithm by its name (tests/test_plots.py checks none is missing), and the
# method labels of the committed experiments that name a variant of one. Any other label (a
# control arm such as rm-ppo-obs, an algorithm from a plugin) is shown as it is written.
DISPLAY_NAMES = {
    "zpg": "ZPG",
    "zbcpg": "ZBCPG",
    "zspo": "ZSPO",
    "par-s2zpo": "Par-S2ZPO",
    "dpo-online": "online DPO",
    "dpo-offline": "offline DPO",
    "fedavg-dpo": "FedAvg DPO",
    "rm-ppo": "RM+PPO",
    "rm-ppo-once": "RM+PPO fitted once (MLP)",
    "rm-ppo-once-kl": "RM+PPO fitted once (MLP), KL 1",
    "rm-ppo-once-tabular": "RM+PPO fitted once (table)",
    "exact-pg": "exact PG",
    "ppo": "PPO",
    "es": "ES",
    "ppo-gaussian": "PPO",
}


def display_name(method: str) -> str:
    """How tables and figures name a method label; a label without a display name keeps it."""
    return DISPLAY_NAMES.get(method, method)
