"""`devinterp-dashboard` (also `python -m devinterp.dashboard`): serve the live dashboard.

    devinterp-dashboard                                  # runs under ./runs, http://127.0.0.1:8050
    devinterp-dashboard runs_dir=/scratch/runs port=8060 interval=5
    devinterp-dashboard runs_dir=runs host=0.0.0.0       # reachable from other machines (no auth!)

Arguments are `key=value` like devinterp-train's. Bad input exits with code 2 and one line
naming the key and value, before anything is served.
"""
from __future__ import annotations

import dataclasses
import errno
import socket
import sys
from pathlib import Path

from devinterp.cli.errors import fail
from devinterp.views.dashboard.config import DashboardConfig

PROG = "devinterp-dashboard"


class ArgumentError(ValueError):
    """A command-line argument is malformed; the message names the key and value."""


def _convert(key: str, raw: str, kind: type):
    if kind is Path:
        return Path(raw).expanduser()
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ArgumentError(f"{key}={raw}: must be an integer") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ArgumentError(f"{key}={raw}: must be a number") from None
    return raw


def parse_args(argv: list[str]) -> DashboardConfig:
    """Build and validate the config from `key=value` arguments; raises ArgumentError."""
    fields = {f.name: f for f in dataclasses.fields(DashboardConfig)}
    types = {"runs_dir": Path, "host": str, "port": int, "interval": float, "stale_after": float}
    values = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep:
            raise ArgumentError(f"{arg}: expected key=value (keys: {', '.join(fields)})")
        if key not in fields:
            raise ArgumentError(f"unknown key '{key}' (keys: {', '.join(fields)})")
        values[key] = _convert(key, raw, types[key])
    cfg = DashboardConfig(**values)
    if not cfg.runs_dir.is_dir():
        raise ArgumentError(f"runs_dir={cfg.runs_dir}: not a directory")
    if not 0 <= cfg.port <= 65535:
        raise ArgumentError(f"port={cfg.port}: must be between 0 and 65535")
    if not cfg.host:
        raise ArgumentError("host=: must not be empty")
    if not cfg.interval > 0:
        raise ArgumentError(f"interval={cfg.interval}: must be a positive number of seconds")
    if not cfg.stale_after > 0:
        raise ArgumentError(f"stale_after={cfg.stale_after}: must be a positive number of seconds")
    return cfg


def check_listen(cfg: DashboardConfig) -> None:
    """Raise ArgumentError unless `host:port` can be listened on (resolvable, free)."""
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, cfg.port))
        except OSError as e:
            key = "host" if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL else "port"
            value = cfg.host if key == "host" else cfg.port
            raise ArgumentError(f"{key}={value}: cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e})") from None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("\nkeys (defaults): " + ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(DashboardConfig)))
        return
    try:
        cfg = parse_args(argv)
        check_listen(cfg)
    except ArgumentError as e:
        fail(PROG, str(e))
    from devinterp.views.dashboard.app import serve  # here: it imports Dash (seconds), so bad input fails fast

    serve(cfg)


if __name__ == "__main__":
    main()
