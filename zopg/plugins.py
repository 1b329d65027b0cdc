"""Objects named by import path ("package.module:NAME"), so experiment files can use
environments, policies and algorithms defined outside zopg."""

from __future__ import annotations

import importlib

from zopg.errors import ConfigError


def is_import_path(name: object) -> bool:
    """Whether `name` is written as an import path: a module and an attribute around one ':'."""
    return isinstance(name, str) and ":" in name


def import_object(kind: str, path: str, accept=None, wanted: str = ""):
    """The object `path` names; a ConfigError naming the kind and the path when it cannot be
    imported (the error says whether the module or the attribute is missing), or when
    `accept(obj)` is false (the error says it must name `wanted`)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{kind} {path!r}: an import path is written 'package.module:NAME'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{kind} {path!r}: cannot import {module_name!r}: {err}") from None
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{kind} {path!r}: module {module_name!r} has no {attr!r}") from None
    if accept is not None and not accept(found):
        raise ConfigError(f"{kind} {path!r}: must name {wanted}; got {found!r}")
    return found
