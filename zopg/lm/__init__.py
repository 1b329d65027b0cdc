"""The language-model-like family: an SFT reference, gold utilities, proxy reward models and
best-of-n on the token environment (zopg.envs.tokens) with its sequence policies."""
