"""`analyze_checkpoints`: post-hoc analysis of checkpoint folders devinterp did not write.

    from devinterp import analyze_checkpoints
    result = analyze_checkpoints("out/", data="tokens.npy", callbacks="study")   # writes out/devinterp/
    # devinterp-analyze checkpoints=out/ data=tokens.npy callbacks=study     (the same, from the shell)
    # devinterp-report run_dir=out/devinterp                                 (its stage report)

The folders (`devinterp.monitor.hf_folders`: `checkpoint-<step>/` with config.json and weights; read
without running anything in them) are imported into a run directory (default `<checkpoints>/devinterp`)
in the layout of `devinterp.store.checkpoints`, with a sample of `data` (`devinterp.monitor.run_files`),
the training losses `trainer_state.json` logged (`train/loss`), and the callbacks run over them exactly
as `devinterp-analyze` runs them over a run of ours (`devinterp.analysis.analyze`; a callback that
cannot measure the model is skipped, saying why). Every callback measures every checkpoint: the presets'
strides thin out dense schedules, and saved folders are not dense.

Analysing the same folder again continues the same run directory: new checkpoints are imported, stored
results are skipped (the data sample of the first analysis is kept). Bad input raises ConfigError, one
line naming the file: no checkpoints, a folder name without a step, a config transformers cannot build,
unreadable or unsafe weights, token ids beyond the model's vocabulary, too few sequences. Everything
but the weights is checked before anything is written; a first analysis whose import then fails on a
folder's weights removes the run directory it created.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from devinterp.analysis import AnalysisResult, ExecutorConfig, analyze
from devinterp.callbacks import Callback, build_callbacks
from devinterp.core.errors import ConfigError
from devinterp.core.logfile import RunLog
from devinterp.monitor.hf_folders import (CheckpointFolder, check_folder, find_checkpoints, load_checkpoint,
                                          logged_losses)
from devinterp.monitor.monitor import CallbacksSpec, callbacks_from
from devinterp.monitor.run_files import (check_vocabulary, create_run_dir, model_description, split_sample,
                                         write_config)
from devinterp.store import checkpoints
from devinterp.store.metrics import MetricsWriter
from devinterp.store.run_dir import LOG_FILE, RUN_CONFIG_FILE, read_run_config, write_status
from devinterp.store.unreadable import UnreadableFileError
from devinterp.tasks import TokenData, read_token_data
from devinterp.tasks.token_data import describe

RUN_DIRNAME = "devinterp"
SOURCE = "checkpoints"


@dataclass
class CheckpointsAnalysis:
    """What `analyze_checkpoints` did: the run directory, the steps imported now, the analysis."""

    run_dir: Path
    imported: list[int]
    analysis: AnalysisResult
    skipped: list[str] = field(default_factory=list)  # "<callback>: skipped, <why>"


@dataclass(frozen=True)
class CheckedInput:
    """The checkpoints and the data, checked (`check_input`), before anything is written."""

    folders: list[CheckpointFolder]
    data: TokenData
    data_name: str


def default_run_dir(checkpoints_dir: Path) -> Path:
    return Path(checkpoints_dir).expanduser() / RUN_DIRNAME


def check_input(checkpoints_dir: Path, data, run_dir: Path, labels=None, seq_len: int | None = None) -> CheckedInput:
    """Every check that needs no weights but the newest checkpoint's (its vocabulary against the data):
    ConfigError naming the file and what is wrong."""
    folders = find_checkpoints(Path(checkpoints_dir), exclude=(run_dir,))
    for folder in folders:
        check_folder(folder.path)
    tokens = read_token_data(data, labels=labels, seq_len=seq_len)
    check_vocabulary(tokens, load_checkpoint(folders[-1].path), describe(data))
    return CheckedInput(folders, tokens, describe(data))


def analyze_checkpoints(checkpoints_dir: str | Path, data, run_dir: str | Path | None = None,
                        callbacks: CallbacksSpec = "study", *, labels=None, seq_len: int | None = None, seed: int = 0,
                        eval_size: int = 256, train_sample_size: int = 1024, device: str = "cpu",
                        executor: ExecutorConfig | None = None, progress: bool = True) -> CheckpointsAnalysis:
    """Import the checkpoint folders of `checkpoints_dir` into `run_dir` and run `callbacks` over them
    (module docstring); `data`, `labels`, `seq_len`, `eval_size`, `train_sample_size` and `seed` as for
    `devinterp.Monitor`."""
    source = Path(checkpoints_dir).expanduser()
    target = Path(run_dir).expanduser() if run_dir is not None else default_run_dir(source)
    checked = check_input(source, data, target, labels, seq_len)
    chosen, callbacks_cfg = callbacks_from(callbacks)
    chosen, callbacks_cfg = every_checkpoint(chosen, callbacks_cfg)
    fresh = not is_import_of(target, source)
    if not fresh:
        config = read_run_config(target)
    else:
        sample, eval_count = split_sample(checked.data, eval_size, train_sample_size, seed, checked.data_name)
        config = {"name": source.resolve().name, "source": SOURCE, "source_dir": str(source.resolve()),
                  "data": checked.data_name, "steps": checked.folders[-1].step,
                  "checkpoints": {"log": 0, "linear": 0, "steps": []}, "callbacks": callbacks_cfg, "loss_fn": None,
                  "model": None}
        target, _task, config = create_run_dir(target, sample, eval_count, seed, config)
    try:
        imported = import_checkpoints(target, checked.folders, progress)
    except ConfigError:  # weights found bad only when read (a .bin refused by weights_only, a missing tensor)
        if fresh:
            shutil.rmtree(target, ignore_errors=True)  # the run directory this call created, half imported
        raise
    steps = [info.step for info in checkpoints.list_checkpoints(target)]
    config.update(steps=max(steps), checkpoints={"log": 0, "linear": 0, "steps": steps},
                  model=model_description(checkpoints.load(target, steps[-1])))
    write_config(target, config)
    write_status(target, "finished", max(steps))
    run_log = RunLog(target / LOG_FILE)
    try:
        result = analyze(target, chosen, executor, device, progress=progress)
    finally:
        run_log.close()
    return CheckpointsAnalysis(target, imported, result, result.skipped)


def every_checkpoint(callbacks: list[Callback], config: dict) -> tuple[list[Callback], dict]:
    """The callbacks (and their config) with a checkpoint stride of 1 (module docstring)."""
    config = {name: {**entry, "schedule": {**(entry.get("schedule") or {}), "checkpoint_stride": 1}}
              for name, entry in config.items()}
    return build_callbacks(config), config


def is_import_of(run_dir: Path, source: Path) -> bool:
    """Whether `run_dir` is a run directory that an earlier analysis of `source` wrote."""
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        return False
    try:
        config = read_run_config(run_dir)
    except UnreadableFileError as e:
        raise ConfigError(str(e)) from None
    return config.get("source") == SOURCE and config.get("source_dir") == str(source.resolve())


def import_checkpoints(run_dir: Path, folders: list[CheckpointFolder], progress: bool) -> list[int]:
    """Each folder not imported yet, as a checkpoint of the run (weights as safetensors; the step's logged
    training loss, when trainer_state.json has one, as its train_loss). Returns the steps imported."""
    present = {info.step for info in checkpoints.list_checkpoints(run_dir)}
    losses = logged_losses(folders[-1].path)
    if not present and losses:
        writer = MetricsWriter(run_dir)
        for step, loss in sorted(losses.items()):
            writer.add(step, {"train/loss": loss})
        writer.flush()
    todo = [folder for folder in folders if folder.step not in present]
    for folder in tqdm(todo, desc="import", unit="ckpt", disable=not progress or not todo, dynamic_ncols=True):
        before = [step for step in losses if step <= folder.step]
        checkpoints.save_checkpoint(run_dir, folder.step, load_checkpoint(folder.path), None,
                                    losses[max(before)] if before else None, 0.0)
    return [folder.step for folder in todo]
