"""Algorithms, each `make_train(config, env, policy, oracle) -> train(key)` (PureJaxRL style)."""

from zopg.algorithms import zbcpg, zpg
from zopg.algorithms.zbcpg import ZBCPGConfig
from zopg.algorithms.zpg import ZPGConfig

__all__ = ["ZBCPGConfig", "ZPGConfig", "zbcpg", "zpg"]
