"""Reading someone else's data: token ids (and optionally labels) from a tensor or a file.

`read_token_data(source)` accepts
- a tensor or numpy array of token ids, (sequences, seq_len); or a 1-D stream of ids, cut into
  consecutive windows of `seq_len` (the remainder is dropped);
- a tuple `(inputs, labels)` (a list is rows) or a mapping with `input_ids` (and optionally `labels`);
- a file: `.npy` / `.npz` (numpy, never with pickles), `.pt` / `.pth` / `.bin` (`torch.load` with
  `weights_only=True`: tensors, lists and dicts only, never code), `.safetensors` (keys `input_ids`
  and `labels`, or a single tensor);
- a directory written by `datasets.Dataset.save_to_disk` (Arrow files with an `input_ids` column and
  optionally `labels`; a `DatasetDict` directory: its `train` split, or its only one). Read with
  pyarrow: the `datasets` package is not needed.

Rows are sequences (or examples: a non-language model's inputs may be any numeric tensor, its labels
of any shape with one row per example). Labels follow the Hugging Face convention: for a causal language
model they are the inputs themselves, with -100 (IGNORE_INDEX) where a token is not scored; the model
shifts them. Without labels every next token is scored.

Bad input raises `TokenDataError` (a ConfigError: one line naming the file and what is wrong).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

from devinterp.core.errors import ConfigError

INPUT_KEY, LABELS_KEY = "input_ids", "labels"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class TokenDataError(ConfigError):
    """Data that cannot serve as token ids; the message names the source and what is wrong."""


@dataclass(frozen=True)
class TokenData:
    """One row per sequence (or example). `labels`: None (score every next token), or one row each."""

    inputs: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def is_token_ids(self) -> bool:
        return not self.inputs.is_floating_point() and not self.inputs.is_complex()

    def max_token(self) -> int | None:
        """The largest token id (None for non-integer inputs)."""
        return int(self.inputs.max()) if self.is_token_ids and self.inputs.numel() else None

    def rows(self, index: torch.Tensor) -> "TokenData":
        return TokenData(self.inputs[index], None if self.labels is None else self.labels[index])


def describe(source) -> str:
    """How an error names a source: its path, or what kind of object it is."""
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"


def read_token_data(source, labels=None, seq_len: int | None = None) -> TokenData:
    """Token ids (and labels) from `source` (module docstring); `labels`, if given, overrides any in it.
    `seq_len` cuts a 1-D stream into windows, and truncates rows of different lengths to a common one."""
    name = describe(source)
    inputs, found = _load(source, name)
    chosen = labels if labels is not None else found
    label_tensor = None if chosen is None else _as_tensor(_load(chosen, describe(chosen))[0], describe(chosen))
    return _shaped(_as_tensor(inputs, name), label_tensor, seq_len, name)


def _load(source, name: str):
    """(inputs, labels or None) from any accepted source, as arrays or tensors (not yet checked)."""
    if isinstance(source, TokenData):
        return source.inputs, source.labels
    if isinstance(source, (str, Path)):
        return _read_path(Path(source).expanduser(), name)
    if isinstance(source, Mapping):
        return _from_mapping(source, name)
    if isinstance(source, tuple) and len(source) == 2:  # a list of two rows is rows, not a pair
        return source[0], source[1]
    return source, None


def _from_mapping(values: Mapping, name: str):
    if INPUT_KEY in values:
        return values[INPUT_KEY], values.get(LABELS_KEY)
    tensors = [v for v in values.values() if isinstance(v, (torch.Tensor, np.ndarray))]
    if len(tensors) == 1:
        return tensors[0], None
    raise TokenDataError(f"{name}: no '{INPUT_KEY}' among its keys ({', '.join(map(str, values))})")


def _read_path(path: Path, name: str):
    if not path.exists():
        raise TokenDataError(f"{name}: no such file or directory")
    try:
        if path.is_dir():
            return _read_dataset_dir(path, name)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _from_mapping({key: archive[key] for key in archive.files}, name)
        if suffix == ".safetensors":
            return _from_mapping(load_file(path), name)
        if suffix in TORCH_SUFFIXES:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            return _from_mapping(loaded, name) if isinstance(loaded, Mapping) else (loaded, None)
    except TokenDataError:
        raise
    except Exception as e:  # a damaged file, a pickle with code in it (weights_only refuses), a foreign format
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TokenDataError(f"{name}: cannot be read ({type(e).__name__}: {first[:200]})") from None
    raise TokenDataError(f"{name}: unknown format '{path.suffix}' (expected .npy, .npz, .pt, .pth, .bin, "
                         f".safetensors or a saved datasets directory)")


def _read_dataset_dir(path: Path, name: str):
    """The `input_ids` (and `labels`) columns of a `datasets` save_to_disk directory."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        split = "train" if "train" in splits else splits[0] if len(splits) == 1 else None
        if split is None:
            raise TokenDataError(f"{name}: a DatasetDict with splits {splits} and none named 'train'")
        return _read_dataset_dir(path / split, f"{name}/{split}")
    state = path / "state.json"
    files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]] if state.is_file() \
        else sorted(path.glob("*.arrow"))
    if not files:
        raise TokenDataError(f"{name}: a directory without a saved dataset (no state.json or .arrow files)")
    tables = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    table = pa.concat_tables(tables)
    if INPUT_KEY not in table.column_names:
        raise TokenDataError(f"{name}: no '{INPUT_KEY}' column (columns: {', '.join(table.column_names)})")
    labels = table.column(LABELS_KEY).to_pylist() if LABELS_KEY in table.column_names else None
    return _ragged(table.column(INPUT_KEY).to_pylist()), None if labels is None else _ragged(labels)


def _ragged(rows: list) -> list | np.ndarray:
    """Equal-length rows as an array; rows of different lengths stay a list (see `_shaped`)."""
    return np.asarray(rows) if len({len(r) for r in rows if isinstance(r, list)}) <= 1 else rows


def _as_tensor(values, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    if isinstance(values, list) and values and isinstance(values[0], list):
        return values  # ragged rows: `_shaped` truncates them
    try:
        array = np.asarray(values)
    except Exception as e:
        raise TokenDataError(f"{name}: not an array of token ids ({type(e).__name__})") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TokenDataError(f"{name}: not numeric (dtype {array.dtype})")
    return torch.from_numpy(np.ascontiguousarray(array))


def _shaped(inputs, labels, seq_len: int | None, name: str) -> TokenData:
    """Rows of equal length: a 1-D stream in windows of `seq_len`; ragged rows truncated to `seq_len`
    (rows shorter than it dropped). Integer ids become int64; labels must match the rows."""
    if isinstance(inputs, list):
        if seq_len is None:
            lengths = sorted({len(r) for r in inputs})
            raise TokenDataError(f"{name}: rows of different lengths ({lengths[0]} to {lengths[-1]} tokens); "
                                 "give seq_len to cut them to one length")
        keep = [i for i, row in enumerate(inputs) if len(row) >= seq_len]
        inputs = torch.tensor([inputs[i][:seq_len] for i in keep])
        if isinstance(labels, list):
            labels = torch.tensor([labels[i][:seq_len] for i in keep])
    if inputs.dim() == 0:
        raise TokenDataError(f"{name}: a single number, not token ids")
    if inputs.dim() == 1 and labels is None and not inputs.is_floating_point():
        if seq_len is None:
            raise TokenDataError(f"{name}: a 1-D stream of {len(inputs)} tokens; give seq_len to cut it into sequences")
        rows = len(inputs) // seq_len
        inputs = inputs[: rows * seq_len].view(rows, seq_len)
    if not inputs.is_floating_point():
        if inputs.numel() and int(inputs.min()) < 0:
            raise TokenDataError(f"{name}: negative token id {int(inputs.min())}")
        inputs = inputs.long()
    if labels is not None:
        labels = labels.long() if not labels.is_floating_point() else labels
        if len(labels) != len(inputs):
            raise TokenDataError(f"{name}: {len(labels)} rows of labels for {len(inputs)} rows of inputs")
    return TokenData(inputs.contiguous(), None if labels is None else labels.contiguous())
