"""zopg: zeroth-order policy gradient from human preferences, benchmarked in JAX."""

from zopg.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
