"""`devinterp <command> ...`: one entry point for the four tools.

    devinterp train steps=500                 # = devinterp-train steps=500
    devinterp analyze runs/induction/<run>    # = devinterp-analyze run_dir=runs/induction/<run>
    devinterp report runs/induction/<run>     # = devinterp-report run_dir=...
    devinterp dashboard runs                  # = devinterp-dashboard runs_dir=runs

A bare path (an argument without '=') becomes the command's directory argument.
"""
from __future__ import annotations

import sys

from devinterp.cli import analyze, dashboard, report, train

# command -> (its app's main(), the key a bare path argument stands for)
COMMANDS = {
    "train": (train.main, "run_dir"),
    "analyze": (analyze.main, "run_dir"),
    "report": (report.main, "run_dir"),
    "dashboard": (dashboard.main, "runs_dir"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: devinterp {{{','.join(COMMANDS)}}} [key=value ...] [PATH]", file=sys.stderr)
        raise SystemExit(2)
    command, args = sys.argv[1], sys.argv[2:]
    app_main, path_key = COMMANDS[command]
    args = [a if "=" in a or a.startswith("-") else f"{path_key}={a}" for a in args]
    sys.argv = [f"devinterp-{command}", *args]
    app_main()


if __name__ == "__main__":
    main()
