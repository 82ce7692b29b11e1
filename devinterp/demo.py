"""`make demo`: the full study on the default induction run.

Trains the 2-layer attention-only transformer with the callbacks live (loss, LLC, Hessian,
induction and weight metrics at checkpoint steps), detects the developmental stages, writes the
report and prints the stage table.
"""
from __future__ import annotations

import sys

from devinterp.train import compose_train_config, report, run


def main(argv: list[str] | None = None) -> None:
    from devinterp.report import build_report
    from devinterp.report.cli import print_stages

    overrides = ["name=demo", "callbacks=study", *(sys.argv[1:] if argv is None else argv)]
    result = run(compose_train_config(overrides), overrides)
    report(result)
    study = build_report(result.run_dir)
    print("\nDevelopmental stages (type A: LLC rises; type B: LLC falls; the loss change is in the evidence):")
    print_stages(study.stages)
    for note in study.notes:
        print(f"note: {note}")
    print(f"report: {study.directory / 'index.html'}")


if __name__ == "__main__":
    main()
