"""LLC accuracy of the default path on generated ground truth (not a timed test).

Every case of `tests.slt.ground_truth.generate_cases` (deep linear networks and reduced-rank
regressions at their empirical minimizers, true λ from Aoyagi's formula) is estimated exactly as a
new user would: `calibrate(model, loss_fn, data)`, then `estimate_llc(model, loss_fn, data,
**recommended)`, with no other argument. Prints one row per case and the summary the targets are
stated in (median and worst relative error per dtype).

    .venv/bin/python scripts/bench_llc_accuracy.py                   # 36 cases, float64 and float32
    .venv/bin/python scripts/bench_llc_accuracy.py --dtype float64 --cases 12 --csv out.csv
    .venv/bin/python scripts/bench_llc_accuracy.py --dtype float32 --only 22,35
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devinterp.slt import calibrate, estimate_llc  # noqa: E402
from tests.slt.ground_truth import build_case, generate_cases  # noqa: E402
from tests.slt.problems import half_squared_error  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def run_case(case, dtype: torch.dtype) -> dict:
    model, data, _ = build_case(case, dtype)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calibrate(model, half_squared_error, data)
        estimate = estimate_llc(model, half_squared_error, data, **result.recommended)
    rec = result.recommended
    return dict(
        case=case.name, dtype=str(dtype).removeprefix("torch."), params=case.num_params, true_llc=case.true_llc,
        llc=estimate.mean, stderr=estimate.stderr, error=estimate.mean / case.true_llc - 1,
        healthy=estimate.healthy, localization_change=result.localization_change,
        step_size=rec["step_size"], localization=rec["localization"],
        batch_size=rec["batch_size"], burnin=estimate.diagnostics["num_burnin"], draws=rec["num_draws"],
        seconds=time.perf_counter() - started, warnings=len(caught),
        problems="; ".join(result.problems + estimate.problems),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=36)
    parser.add_argument("--first", type=int, default=0, help="skip the generator's cases before this index")
    parser.add_argument("--only", type=lambda s: {int(i) for i in s.split(",")}, default=None,
                        help="run only these case indices (comma-separated), e.g. to split the family over cores")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case generator")
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = list(DTYPES.values()) if args.dtype == "both" else [DTYPES[args.dtype]]
    rows = []
    pd.set_option("display.width", 200)
    for dtype in dtypes:
        for index, case in enumerate(generate_cases(args.cases, args.seed)):
            if index < args.first or (args.only is not None and index not in args.only):
                continue
            row = run_case(case, dtype)
            rows.append(row)
            print(f"{index:2d} {row['case']:34s} {row['dtype']:7s} λ={row['true_llc']:6.2f}  λ̂={row['llc']:7.2f} ± "
                  f"{row['stderr']:5.2f}  error {row['error']:+6.1%}  ε={row['step_size']:.2e} γ={row['localization']:.3g} "
                  f"b={row['batch_size']} {row['burnin']}+{row['draws']} steps  at 3γ {row['localization_change']:+.0%}  "
                  f"{row['seconds']:5.1f} s"
                  f"{'' if row['healthy'] else '  UNHEALTHY'}", flush=True)
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print("\nsummary (relative error of λ̂ against Aoyagi's λ):")
    for dtype, group in table.groupby("dtype"):
        errors = group.error.abs()
        print(f"  {dtype}: {len(group)} cases, median {np.median(errors):.1%}, worst {errors.max():.1%}, "
              f"within 10%: {(errors <= 0.10).sum()}, within 25%: {(errors <= 0.25).sum()}, "
              f"healthy {group.healthy.sum()}/{len(group)}, median {group.seconds.median():.0f} s per case")


if __name__ == "__main__":
    main()
