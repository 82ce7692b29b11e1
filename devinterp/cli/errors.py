"""Turn configuration failures into one clear line and exit code 2.

Hydra reports composition errors (unknown keys, wrong types, unknown group options) as multi-line
messages with exit code 1. Entry points call `preflight` first: it composes the config exactly as
Hydra will (every combination of a multirun sweep), runs the app's value checks, and on failure
prints `<prog>: error: <one line naming key and value>` and exits 2, before Hydra starts or any
directory is created.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from devinterp.core.errors import describe

# Hydra's own flags that take a value as the next argument.
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--cfg", "-c", "--package", "-p", "--info", "--experimental-rerun"}
EXIT_CONFIG_ERROR = 2  # bad input, before anything ran
EXIT_FAILED = 1  # the work failed (a write during training, callback runs of an analysis)


def split_argv(argv: list[str]) -> tuple[list[str], bool]:
    """(app overrides, is_multirun) from Hydra's command line; `hydra.*` overrides are left to Hydra."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif arg.startswith("-"):
            continue
        elif not arg.lstrip("+~").startswith("hydra"):
            overrides.append(arg)
    return overrides, multirun


def preflight(
    prog: str,
    config_dir: Path,
    config_name: str,
    argv: list[str],
    check: Callable[[DictConfig], None],
    error_types: tuple[type[BaseException], ...],
) -> list[DictConfig]:
    """Compose and check every job's config (returned); on failure print one line and exit 2."""
    overrides, multirun = split_argv(argv)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=prog):
            jobs = [overrides]
            if multirun:
                parsed = OverridesParser.create().parse_overrides(overrides)
                jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
            configs = [compose(config_name=config_name, overrides=list(job)) for job in jobs]
            for cfg in configs:
                check(cfg)
    except error_types as e:
        fail(prog, str(e))
    except Exception as e:  # composition errors: unknown key, bad type, unknown option, bad syntax
        fail(prog, describe(e))
    return configs


def override_key(override: str) -> str:
    """'+a.b=1' -> 'a.b'; '~a' -> 'a'."""
    return override.lstrip("+~").split("=", 1)[0]


def fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)
