"""Someone else's data as a task: rows of token ids (and optionally labels) from a file, with a fixed split.

`path` is any file or directory `devinterp.tasks.token_data` reads (token ids of shape (rows, seq_len),
a 1-D stream cut into windows of `seq_len`, labels beside them or not). A relative path is relative to
the current directory, or, when the file is in the run directory (a monitored run's own copy,
`data.safetensors`), to the run directory (`in_run`).

The split is by position: the last `eval_size` rows are the fixed evaluation set, the rows before them
the training part. `train_batch(step, b)` draws b training rows without replacement, a pure function of
(seed, step); when b is at least the number of training rows it returns all of them in file order, so
the run's training sample (`train_batch(0, train_sample_size)`) is the training part itself whenever it
is that large (as for `modular`). `labels(tokens)` gives the file's labels of those rows (found by their
content: of two identical rows the first one's), or the rows themselves (every next token scored) when
the file has none. The vocabulary is the largest token id + 1.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
import torch
from omegaconf import MISSING

from devinterp.core.errors import require
from devinterp.tasks.base import TRAIN_STREAM, TaskConfig, derived_generator
from devinterp.tasks.token_data import TokenData, TokenDataError, read_token_data

MIN_TRAIN_ROWS = 8  # a training part smaller than this cannot feed the LLC's minibatches


@dataclass
class TokensTaskConfig(TaskConfig):
    """Schema of configs/task/tokens.yaml: rows of token ids from `path` (see the module docstring)."""

    _target_: str = "devinterp.tasks.tokens.TokensTask"
    name: str = "tokens"
    path: str = MISSING
    seq_len: int = 0  # cuts a 1-D stream (or ragged rows) into this length; 0: the rows' own length
    eval_size: int = 256  # the last this many rows are the evaluation set

    def validate(self) -> None:
        require(self.seq_len == 0 or self.seq_len >= 2, "seq_len", self.seq_len,
                "must be at least 2 (or 0: the rows' own length)")
        require(self.eval_size > 0, "eval_size", self.eval_size, "must be positive")
        try:
            data = read_tokens(self.path, self.seq_len or None)
        except TokenDataError as e:
            require(False, "path", self.path, str(e).removeprefix(f"{self.path}: "))
        require(len(data) - self.eval_size >= MIN_TRAIN_ROWS, "path", self.path,
                f"too few sequences ({len(data)}) for eval_size={self.eval_size} and at least {MIN_TRAIN_ROWS} "
                "training ones")

    def needed_vocab_size(self) -> int:
        return vocab_size(read_tokens(self.path, self.seq_len or None))

    def in_run(self, run_dir: Path) -> "TokensTaskConfig":
        inside = Path(run_dir) / self.path
        return replace(self, path=str(inside)) if not Path(self.path).is_absolute() and inside.exists() else self


def vocab_size(data: TokenData) -> int:
    """Token ids used: the largest + 1 (0 for inputs that are not token ids)."""
    largest = data.max_token()
    return 0 if largest is None else largest + 1


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, stamp: tuple[int, int], seq_len: int | None) -> TokenData:
    return read_token_data(path, seq_len=seq_len)


def read_tokens(path: str, seq_len: int | None = None) -> TokenData:
    """`read_token_data(path)`, read once per process while the file is unchanged (callers must not
    modify the tensors)."""
    resolved = Path(path).expanduser()
    try:
        stat = resolved.stat()
    except OSError:
        return read_token_data(resolved, seq_len=seq_len)  # raises TokenDataError naming it
    return _read_cached(str(resolved), (stat.st_mtime_ns, stat.st_size), seq_len)


@dataclass(frozen=True)
class TokensTask:
    path: str
    seed: int
    eval_size: int = 256
    seq_len: int = 0  # 0: the rows' own length (see TokensTaskConfig)
    name: str = "tokens"
    data: TokenData = field(init=False, repr=False, compare=False)
    _label_rows: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self):
        data = read_tokens(self.path, self.seq_len or None)
        if len(data) - self.eval_size < 1:
            raise ValueError(f"{self.path}: {len(data)} rows leave none for training beside eval_size={self.eval_size}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "seq_len", int(data.inputs.shape[1]) if data.inputs.dim() > 1 else 1)

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.data)

    @property
    def num_train(self) -> int:
        return len(self.data) - self.eval_size

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        if batch_size >= self.num_train:
            return self.data.inputs[: self.num_train]
        chosen = torch.randperm(self.num_train, generator=derived_generator(self.seed, TRAIN_STREAM, step))
        return self.data.inputs[chosen[:batch_size]]

    def eval_tokens(self) -> torch.Tensor:
        return self.data.inputs[self.num_train :]

    def labels(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.data.labels is None:
            return tokens
        if not self._label_rows:
            for i, row in enumerate(self.data.inputs):
                self._label_rows.setdefault(row.numpy().tobytes(), i)
        try:
            rows = [self._label_rows[row.cpu().numpy().tobytes()] for row in tokens]
        except KeyError:
            raise ValueError(f"labels: a row that is not in {self.path}") from None
        return self.data.labels[torch.tensor(rows, dtype=torch.long)].to(tokens.device)

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        return {}
