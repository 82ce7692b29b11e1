"""`devinterp-report run_dir=...` (also `python -m devinterp.report`).

    devinterp-report run_dir=runs/induction/<run>                     # into <run>/report/
    devinterp-report run_dir=/readonly/run out_dir=~/reports/run1     # elsewhere
    devinterp-report run_dir=runs/induction/multirun_<date>_<time>    # seeds overlaid and compared
    devinterp-report run_dir=... llc_settings=<hash>                  # another primary LLC series

Bad input (no run directory, an output directory that cannot be written, an `llc_settings` hash
with no LLC series) exits with code 2 and one line naming the key, before anything is written.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from devinterp.cli.configs import CONFIG_DIR, register_configs
from devinterp.cli.errors import preflight
from devinterp.core.devices import Device, resolve_device
from devinterp.core.errors import ConfigError
from devinterp.store.metrics import read_metrics_and_problems
from devinterp.store.run_dir import REPORT_DIRNAME, RUN_CONFIG_FILE, read_run_config
from devinterp.store.unreadable import UnreadableFileError
from devinterp.training.loggers import LoggerConfig, build_logger
from devinterp.views.report import Report, build_report, format_stages
from devinterp.views.report.build import DEFAULT_LOSS
from devinterp.views.report.series import seed_runs, split_llc_series


@dataclass
class ReportConfig:
    """Schema of configs/report.yaml."""

    run_dir: str = MISSING
    llc: str = "llc/mean"  # metric whose critical points bound the stages
    llc_std: Optional[str] = "llc/std"  # its chain-to-chain spread
    llc_settings: Optional[str] = None  # settings hash of the primary LLC series; default: the run's own
    loss: str = DEFAULT_LOSS  # the loss beside the LLC in the stage table (eval/loss if absent)
    ed_examples: int = 32  # eval sequences whose outputs feed essential dynamics
    device: Device = Device.auto
    out_dir: Optional[str] = None  # where the report goes; default <run_dir>/report
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: stages and figures to the run's wandb run


PROG = "devinterp-report"
register_configs()
ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def output_dir(report_cfg: ReportConfig) -> Path:
    if report_cfg.out_dir is not None:
        return Path(report_cfg.out_dir).expanduser()
    return Path(report_cfg.run_dir) / REPORT_DIRNAME


def writable(directory: Path) -> bool:
    """Whether files can be created in `directory` (or, if it does not exist yet, in its nearest
    existing parent). Tries it: permission bits say nothing for root or a read-only mount."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False


def check_report_config(cfg: DictConfig) -> None:
    report_cfg: ReportConfig = OmegaConf.to_object(cfg)
    run_dir = Path(report_cfg.run_dir)
    runs = [run_dir] if (run_dir / RUN_CONFIG_FILE).is_file() else seed_runs(run_dir) if run_dir.is_dir() else []
    if not runs:
        raise ConfigError(f"run_dir={report_cfg.run_dir!r}: not a devinterp run directory (no {RUN_CONFIG_FILE}) "
                          "nor a multirun directory (no subdirectory with one)")
    for run in runs:
        try:
            read_run_config(run)
        except UnreadableFileError as e:
            raise ConfigError(str(e)) from None
    if report_cfg.llc_settings is not None:
        for run in runs:
            found = split_llc_series(read_metrics_and_problems(run, latest_only=False)[0], report_cfg.llc)
            if report_cfg.llc_settings not in found:
                raise ConfigError(f"llc_settings={report_cfg.llc_settings!r}: no '{report_cfg.llc}' series with this "
                                  f"settings hash in {run}; available: {', '.join(sorted(found)) or 'none'}")
    if report_cfg.ed_examples <= 0:
        raise ConfigError(f"ed_examples={report_cfg.ed_examples}: must be positive")
    out = output_dir(report_cfg)
    if not writable(out):
        if report_cfg.out_dir is None:
            raise ConfigError(f"run_dir={report_cfg.run_dir!r}: cannot write {out} (read-only?); "
                              "write the report elsewhere with out_dir=<directory>")
        raise ConfigError(f"out_dir={report_cfg.out_dir!r}: cannot write there")


def log_report(report_cfg: ReportConfig, report: Report) -> None:
    """Stages table and figures to the run's wandb run (logger=wandb; a multirun's: its reported run's)."""
    run_dir = next(iter(seed_runs(Path(report_cfg.run_dir))), Path(report_cfg.run_dir))
    logger = build_logger(report_cfg.logger, run_dir, None, group=read_run_config(run_dir).get("name"))
    try:
        logger.log_table("report/stages", report.stages)
        logger.log_images({f"report/{path.stem}": path for path in report.figures})
    finally:
        logger.finish()


@hydra.main(config_path=str(CONFIG_DIR), config_name="report", version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    report_cfg: ReportConfig = OmegaConf.to_object(cfg)
    report = build_report(Path(report_cfg.run_dir), llc=report_cfg.llc, loss=report_cfg.loss,
                          llc_std=report_cfg.llc_std, llc_settings=report_cfg.llc_settings,
                          ed_examples=report_cfg.ed_examples,
                          device=str(resolve_device(report_cfg.device)), out_dir=output_dir(report_cfg))
    print(format_stages(report.stages))
    log_report(report_cfg, report)
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {report.page}")


def main() -> None:
    preflight(PROG, CONFIG_DIR, "report", sys.argv[1:], check=check_report_config, error_types=(ConfigError,))
    hydra_app()


if __name__ == "__main__":
    main()
