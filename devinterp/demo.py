"""`make demo`: train the default induction run and summarise it."""
from __future__ import annotations

import sys

from devinterp.train import compose_train_config, report, run


def main(argv: list[str] | None = None) -> None:
    overrides = ["name=demo", *(sys.argv[1:] if argv is None else argv)]
    report(run(compose_train_config(overrides), overrides))


if __name__ == "__main__":
    main()
