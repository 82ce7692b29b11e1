"""Typed configuration of a training run.

Every Hydra config group is backed by a dataclass registered in Hydra's ConfigStore, so a wrong
key or a wrongly typed value is rejected when the config is composed, before anything runs.
`validate_train_config` then checks values that types cannot express (positive step counts, a
vocabulary large enough for the task, an existing text file, ...) and raises `ConfigError` naming
the offending key and value.

YAML files in `configs/` pick values; these dataclasses are their schemas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from devinterp.core.devices import Device
from devinterp.core.errors import ConfigError


# ----------------------------------------------------------------------------- model/
@dataclass
class ModelConfig:
    name: str = MISSING
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    # Default None: taken from the task. Set explicitly, they must cover what the task needs.
    vocab_size: Optional[int] = None
    n_ctx: Optional[int] = None


class AttnImpl(str, Enum):
    explicit = "explicit"  # works under torch.func transforms and double backward
    sdpa = "sdpa"  # fused kernel: faster training, no HVPs / forward-mode AD


@dataclass
class AttnOnlyModelConfig(ModelConfig):
    name: str = "attn_only"
    layer_norm: bool = True
    init_std: float = 0.02
    attn_impl: AttnImpl = AttnImpl.explicit


@dataclass
class GPT2ModelConfig(ModelConfig):
    name: str = "gpt2"
    dropout: float = 0.0


# ----------------------------------------------------------------------------- task/
@dataclass
class TaskConfig:
    name: str = MISSING
    seq_len: int = 64
    eval_size: int = 512  # sequences in the fixed held-out evaluation set


@dataclass
class InductionTaskConfig(TaskConfig):
    name: str = "induction"
    vocab_size: int = 64
    # Repeat period (length of the random block) drawn per sequence from [min_period, max_period];
    # defaults seq_len // 4 and seq_len // 2.
    min_period: Optional[int] = None
    max_period: Optional[int] = None
    # None: the block is uniform random tokens; a number: a walk of a fixed random bigram language,
    # transition rows ~ Dirichlet(bigram_concentration) (devinterp.tasks.induction)
    bigram_concentration: Optional[float] = None


@dataclass
class MarkovICLTaskConfig(TaskConfig):
    name: str = "markov_icl"
    num_states: int = 8
    concentration: float = 1.0  # Dirichlet parameter of each transition row


@dataclass
class TextTaskConfig(TaskConfig):
    name: str = "text"
    path: str = MISSING
    seq_len: int = 128
    eval_size: int = 256
    eval_fraction: float = 0.1


@dataclass
class ModularTaskConfig(TaskConfig):
    """a + b (mod modulus) as `[a, b, =, c]`, only c scored (devinterp.tasks.modular)."""

    name: str = "modular"
    modulus: int = 53
    train_fraction: float = 0.3  # of the modulus² pairs; the rest is the held-out test set
    seq_len: int = 4  # fixed by the format [a, b, =, c]
    eval_size: int = 1_000_000  # at most this many held-out pairs (default: all of them)


# Task schemas by `task.name` (to rebuild a run's task from its saved config.yaml).
TASK_SCHEMAS = {"induction": InductionTaskConfig, "markov_icl": MarkovICLTaskConfig, "text": TextTaskConfig,
                "modular": ModularTaskConfig}


# ----------------------------------------------------------------------------- optim/
class OptimizerName(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


class LRSchedule(str, Enum):
    constant = "constant"
    linear = "linear"  # linear decay to 0 after warmup
    cosine = "cosine"  # cosine decay to 0 after warmup


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    # adamw: added to √(second moment); larger values damp the huge steps Adam takes when gradients
    # become tiny (e.g. near zero training loss), which otherwise cause loss spikes
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    warmup_steps: int = 0
    schedule: LRSchedule = LRSchedule.constant
    grad_clip: Optional[float] = 1.0  # max global grad norm; null disables clipping


# ----------------------------------------------------------------------------- checkpoints/
@dataclass
class CheckpointConfig:
    log: int = 60  # log-spaced checkpoint steps over [1, steps]
    linear: int = 40  # linearly spaced steps over [0, steps]


# ----------------------------------------------------------------------------- logger/
class LoggerName(str, Enum):
    none = "none"
    wandb = "wandb"


class WandbMode(str, Enum):
    offline = "offline"  # no account or network needed; `wandb sync` later
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.none
    project: str = "devinterp"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.offline
    tags: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- train.yaml
class AnalyzeMode(str, Enum):
    live = "live"  # the callbacks run inside the training loop, at their steps
    follow = "follow"  # a follower process measures each checkpoint as it lands (devinterp.analysis.follow)


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # {name: {_target_: devinterp.callbacks.X, schedule: {...}, settings...}}; see configs/callbacks/
    callbacks: Dict[str, Any] = field(default_factory=dict)
    train_sample_size: int = 1024  # fixed training sequences callbacks measure on (LLC data, grads)
    name: str = "induction"  # experiment name: runs go to <runs_root>/<name>/
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    device: Device = Device.auto
    runs_root: str = "runs"
    run_dir: Optional[str] = None  # default <runs_root>/<name>/<date>_<time>_seed<seed>
    resume: bool = False  # continue run_dir from its last complete checkpoint
    log_every: int = 5  # record train/loss every this many steps
    progress: bool = True  # progress bar on stderr
    analyze: AnalyzeMode = AnalyzeMode.live  # where the callbacks run: in the loop, or in a follower process
    follower_threads: Optional[int] = None  # analyze=follow: torch threads of the follower (default: half the cores)


# ----------------------------------------------------------------------------- executor/ (analyze)
class ExecutorName(str, Enum):
    local = "local"  # in this process, one checkpoint after another
    process = "process"  # a pool of local processes (one machine's cores)
    ray = "ray"  # one Ray task per checkpoint (local cluster, or executor.address=...)


@dataclass
class ExecutorConfig:
    name: ExecutorName = ExecutorName.local
    num_workers: Optional[int] = None  # process: pool size (default: CPU count)
    address: Optional[str] = None  # ray: an existing cluster ("auto" or host:port); default local
    num_cpus_per_task: float = 1.0  # ray
    num_gpus_per_task: Optional[float] = None  # ray: default 1 when the cluster has GPUs, else 0


# ----------------------------------------------------------------------------- analyze.yaml
@dataclass
class AnalyzeConfig:
    run_dir: str = MISSING
    callbacks: Dict[str, Any] = field(default_factory=dict)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: into the run's own wandb run
    steps: Optional[List[int]] = None  # only these checkpoint steps (default: every due one)
    device: Device = Device.auto
    progress: bool = True
    follow: bool = False  # measure checkpoints as they land until the run is finished (devinterp.analysis.follow)
    poll_seconds: float = 2.0  # follow: seconds between looks at the run directory
    stale_after: float = 600.0  # follow: give up when the trainer's status is this many seconds old


# ----------------------------------------------------------------------------- report.yaml
@dataclass
class ReportConfig:
    run_dir: str = MISSING
    llc: str = "llc/mean"  # metric whose critical points bound the stages
    llc_std: Optional[str] = "llc/std"  # its chain-to-chain spread
    llc_settings: Optional[str] = None  # settings hash of the primary LLC series; default: the run's own
    loss: str = "train/fixed_loss"  # the loss beside the LLC in the stage table (eval/loss if absent)
    ed_examples: int = 32  # eval sequences whose outputs feed essential dynamics
    device: Device = Device.auto
    out_dir: Optional[str] = None  # where the report goes; default <run_dir>/report
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: stages and figures to the run's wandb run


def register_configs() -> None:
    """Register the schemas; YAML files in configs/ extend them via their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="attn_only_schema", node=AttnOnlyModelConfig)
    cs.store(group="model", name="gpt2_schema", node=GPT2ModelConfig)
    cs.store(group="task", name="induction_schema", node=InductionTaskConfig)
    cs.store(group="task", name="markov_icl_schema", node=MarkovICLTaskConfig)
    cs.store(group="task", name="text_schema", node=TextTaskConfig)
    cs.store(group="task", name="modular_schema", node=ModularTaskConfig)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="checkpoints", name="checkpoints_schema", node=CheckpointConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(name="analyze_schema", node=AnalyzeConfig)
    cs.store(name="report_schema", node=ReportConfig)
    cs.store(group="executor", name="executor_schema", node=ExecutorConfig)


# ----------------------------------------------------------------------------- validation
def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def task_vocab_size(task: TaskConfig) -> int:
    if isinstance(task, InductionTaskConfig):
        return task.vocab_size
    if isinstance(task, MarkovICLTaskConfig):
        return task.num_states
    if isinstance(task, ModularTaskConfig):
        return task.modulus + 1
    return 256  # text: bytes


def validate_train_config(cfg: TrainConfig) -> None:
    """Check values; raise ConfigError naming the first offending key and value."""
    _require(cfg.steps > 0, "steps", cfg.steps, "must be a positive number of training steps")
    _require(cfg.batch_size > 0, "batch_size", cfg.batch_size, "must be positive")
    _require(cfg.log_every > 0, "log_every", cfg.log_every, "must be positive")
    _require(cfg.train_sample_size > 0, "train_sample_size", cfg.train_sample_size, "must be positive")
    _require(cfg.follower_threads is None or cfg.follower_threads > 0, "follower_threads", cfg.follower_threads,
             "must be positive or null")
    for key in ("log", "linear"):
        count = getattr(cfg.checkpoints, key)
        _require(count >= 0, f"checkpoints.{key}", count, "must be >= 0")
        _require(count <= cfg.steps + 1, f"checkpoints.{key}", count,
                 f"more checkpoints than there are steps (steps={cfg.steps})")
    _validate_optim(cfg.optim, cfg.steps)
    _validate_task(cfg.task)
    _validate_model(cfg.model, cfg.task)
    if cfg.device == Device.cuda:
        import torch

        _require(torch.cuda.is_available(), "device", "cuda", "CUDA is not available on this machine")
    if cfg.resume:
        _require(cfg.run_dir is not None, "resume", True, "needs run_dir=<the run directory to continue>")
        _require((Path(cfg.run_dir) / "config.yaml").is_file(), "run_dir", cfg.run_dir,
                 "is not a devinterp run directory (no config.yaml) and cannot be resumed")


def _validate_optim(optim: OptimConfig, steps: int) -> None:
    _require(optim.lr > 0, "optim.lr", optim.lr, "must be positive")
    _require(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, "must be >= 0")
    _require(optim.eps > 0, "optim.eps", optim.eps, "must be positive")
    _require(len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas), "optim.betas", list(optim.betas),
             "must be two numbers in [0, 1)")
    _require(0 <= optim.warmup_steps < steps, "optim.warmup_steps", optim.warmup_steps,
             f"must be in [0, steps={steps})")
    _require(optim.grad_clip is None or optim.grad_clip > 0, "optim.grad_clip", optim.grad_clip,
             "must be positive or null")


def _validate_task(task: TaskConfig) -> None:
    _require(task.seq_len >= 4, "task.seq_len", task.seq_len, "must be at least 4")
    _require(task.eval_size > 0, "task.eval_size", task.eval_size, "must be positive")
    if isinstance(task, InductionTaskConfig):
        _require(task.vocab_size >= 2, "task.vocab_size", task.vocab_size, "must be at least 2")
        for key in ("min_period", "max_period"):
            value = getattr(task, key)
            _require(value is None or 1 <= value < task.seq_len, f"task.{key}", value,
                     f"must be in [1, task.seq_len={task.seq_len})")
        _require(task.bigram_concentration is None or task.bigram_concentration > 0, "task.bigram_concentration",
                 task.bigram_concentration, "must be positive (or null: uniform tokens)")
        if task.min_period is not None and task.max_period is not None:
            _require(task.min_period <= task.max_period, "task.min_period", task.min_period,
                     f"must not exceed task.max_period={task.max_period}")
    elif isinstance(task, MarkovICLTaskConfig):
        _require(task.num_states >= 2, "task.num_states", task.num_states, "must be at least 2")
        _require(task.concentration > 0, "task.concentration", task.concentration, "must be positive")
    elif isinstance(task, ModularTaskConfig):
        _require(task.seq_len == 4, "task.seq_len", task.seq_len, "must be 4 for task=modular ([a, b, =, c])")
        _require(task.modulus >= 2, "task.modulus", task.modulus, "must be at least 2")
        _require(0 < task.train_fraction < 1, "task.train_fraction", task.train_fraction, "must be in (0, 1)")
        num_train = round(task.train_fraction * task.modulus**2)
        _require(0 < num_train < task.modulus**2, "task.train_fraction", task.train_fraction,
                 f"leaves no training or no held-out pair of the {task.modulus ** 2}")
    elif isinstance(task, TextTaskConfig):
        path = Path(task.path)
        _require(path.is_file(), "task.path", task.path, "no such file")
        size = path.stat().st_size
        _require(size > 0, "task.path", task.path, "the file is empty")
        _require(0 < task.eval_fraction < 1, "task.eval_fraction", task.eval_fraction, "must be in (0, 1)")
        held_out = size - int(size * (1 - task.eval_fraction))
        _require(min(size - held_out, held_out) >= task.seq_len, "task.path", task.path,
                 f"too short ({size} bytes) for task.seq_len={task.seq_len} windows in both the "
                 f"training part and the held-out {task.eval_fraction:.0%}")


def _validate_model(model: ModelConfig, task: TaskConfig) -> None:
    _require(model.n_layers > 0, "model.n_layers", model.n_layers, "must be positive")
    _require(model.n_heads > 0, "model.n_heads", model.n_heads, "must be positive")
    _require(model.d_model > 0 and model.d_model % model.n_heads == 0, "model.d_model", model.d_model,
             f"must be a positive multiple of model.n_heads={model.n_heads}")
    needed = task_vocab_size(task)
    if model.vocab_size is not None:
        _require(model.vocab_size >= needed, "model.vocab_size", model.vocab_size,
                 f"smaller than the vocabulary task={task.name} needs ({needed})")
    if model.n_ctx is not None:
        _require(model.n_ctx >= task.seq_len, "model.n_ctx", model.n_ctx,
                 f"shorter than task.seq_len={task.seq_len}")
