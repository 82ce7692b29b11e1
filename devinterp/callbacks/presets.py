"""The callbacks a name or a short list asks for, from the callback configs that ship with the package.

    callbacks_config("study")                                  # configs/callbacks/study.yaml, resolved
    callbacks_config(["loss", "llc"])                          # two callbacks
    callbacks_config(["study", "llc.num_draws=100", "~grads"]) # a preset, a setting changed, one dropped
    callbacks_config({"loss": {"_target_": "devinterp.callbacks.LossCallback"}})   # a config as it is

This is the `callbacks=` of the command-line apps for Python callers (`devinterp.Monitor`,
`devinterp.analyze_checkpoints`), without Hydra's global state: names are files of
`devinterp/configs/callbacks/`, whose `defaults` lists are merged first (their own keys last, as Hydra
does); overrides use Hydra's override syntax, relative to `callbacks` (`callbacks.` may be written).
The result is the `{name: {_target_, schedule, settings...}}` mapping `build_callbacks` instantiates.
"""
from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from devinterp.core.errors import ConfigError, describe

CALLBACK_CONFIGS = Path(str(importlib.resources.files("devinterp") / "configs" / "callbacks"))
PREFIX = "callbacks."


def preset_names() -> list[str]:
    return sorted(path.stem for path in CALLBACK_CONFIGS.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """configs/callbacks/<name>.yaml with its defaults merged in (plain containers)."""
    path = CALLBACK_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"callbacks: unknown '{name}' (available: {', '.join(preset_names())})")
    own = OmegaConf.load(path)
    merged = OmegaConf.create({})
    for default in own.pop("defaults", None) or []:
        merged = OmegaConf.merge(merged, load_preset(str(default)))
    return OmegaConf.to_container(OmegaConf.merge(merged, own), resolve=True)


def callbacks_config(spec: str | Sequence | Mapping | None) -> dict:
    """The callbacks config `spec` names (module docstring); ConfigError naming a bad name or override."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return OmegaConf.to_container(OmegaConf.create(dict(spec)), resolve=True)
    items = [spec] if isinstance(spec, str) else list(spec)
    config = OmegaConf.create({})
    overrides = [item for item in items if "=" in item or item.startswith("~")]
    for name in (item for item in items if item not in overrides):
        config = OmegaConf.merge(config, load_preset(name))
    for text in overrides:
        apply_override(config, text.replace(PREFIX, "", 1) if text.lstrip("~+").startswith(PREFIX) else text)
    return OmegaConf.to_container(config, resolve=True)


def apply_override(config, text: str) -> None:
    """One Hydra-style override (`a.b=1`, `~a`, `+a.c=x`) applied to `config` in place."""
    try:
        override = OverridesParser.create().parse_overrides([text])[0]
    except Exception as e:
        raise ConfigError(f"callbacks: cannot parse override '{text}' ({describe(e)})") from None
    key = override.key_or_group
    if override.is_delete():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        if node is None or leaf not in node:
            raise ConfigError(f"~callbacks.{key}: no such entry to drop")
        node.pop(leaf)
        return
    if not override.is_add() and OmegaConf.select(config, key, default="<missing>") == "<missing>" \
            and OmegaConf.select(config, key.split(".")[0]) is None:
        raise ConfigError(f"callbacks.{key}: no callback '{key.split('.')[0]}' selected (add it by name first)")
    OmegaConf.update(config, key, override.value(), merge=True, force_add=True)
