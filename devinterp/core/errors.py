"""Configuration errors: one line that names the key and the value.

Each config checks its own values (a task's, a model's, a callback's settings) with `require`, which
raises `SettingError` with the key relative to that config (`vocab_size`); the code that knows where
the config sits prefixes it (`task.vocab_size=...`) and raises `ConfigError`, which the command-line
apps print as one line and exit with code 2. `describe` turns Hydra's and OmegaConf's multi-line
composition errors (an unknown key, a wrong type, an unknown group option) into such a line.
"""
from __future__ import annotations

from typing import Any

from hydra.errors import MissingConfigException
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and the value."""


class SettingError(ValueError):
    """A setting has a bad value. `key` is relative to its config ("step_size")."""

    def __init__(self, key: str, value: Any, why: str):
        super().__init__(f"{key}={value!r}: {why}")
        self.key, self.value, self.why = key, value, why

    def within(self, prefix: str) -> ConfigError:
        """The same error as a ConfigError naming the full key: `<prefix>.<key>=<value>: <why>`."""
        return ConfigError(f"{prefix}.{self}")


def require(ok: bool, key: str, value: Any, why: str) -> None:
    """Raise SettingError(key, value, why) unless `ok`: the building block of every `validate`."""
    if not ok:
        raise SettingError(key, value, why)


def positive(value: Any) -> bool:
    """A number (not a bool or a string) greater than 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def describe(error: BaseException) -> str:
    """One line for a composition error, naming the key (and value) where known."""
    chain, e = [], error
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, MissingConfigException):
            options = [o for o in getattr(e, "options", None) or [] if not o.endswith("_schema")]
            options = f" (available: {', '.join(options)})" if options else ""
            return str(e).splitlines()[0] + options
        if isinstance(e, OmegaConfBaseException):
            first = str(e).splitlines()[0]
            key = getattr(e, "full_key", None)
            if "not in struct" in first or "not in '" in first:
                return f"unknown config key '{key}' ({first})" if key else first
            return f"{key}: {first}" if key else first
    return str(error).splitlines()[0]
