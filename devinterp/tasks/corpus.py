"""Language modelling on real text that every Python install ships, with a trained BPE vocabulary.

Sources (`source`), built deterministically from the running Python's standard library, no download:
- `docs`: English prose about Python: the language reference and library topics of `pydoc_data`
  (~0.5 MB) and the docstrings of the standard library's modules, classes and functions (~1.7 MB on
  CPython 3.11; at least 40 characters each), in path order;
- `code`: the standard library's Python source itself (~13 MB; tests and vendored packages left out).

Documents are joined with blank lines. A byte-level BPE tokenizer (`tokenizers`) with `vocab_size`
tokens is trained on the text, and the text and tokens are cached in `cache_dir` under the text's
SHA-256 (`<source>-<hash>-v<vocab_size>.{tokenizer.json,safetensors}`): another Python version gives
other text, and so another cache entry. The last `eval_fraction` of the token stream is held out;
training batches are random windows of the rest (seeded by (seed, step)), the eval set `eval_size`
fixed windows of the held-out tail.
"""
from __future__ import annotations

import ast
import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from devinterp.core.errors import require
from devinterp.store.atomic import atomic_write_text, tmp_path_for
from devinterp.tasks.base import TaskConfig
from devinterp.tasks.text import StreamWindows

SOURCES = ("docs", "code")
SKIPPED_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3", "ensurepip"}
MIN_DOCSTRING = 40  # characters: shorter docstrings ("Return self.") add little text


@dataclass
class CorpusTaskConfig(TaskConfig):
    """Schema of configs/task/corpus.yaml."""

    _target_: str = "devinterp.tasks.corpus.CorpusTask"
    name: str = "corpus"
    source: str = "docs"
    vocab_size: int = 4096
    seq_len: int = 128
    eval_size: int = 256
    eval_fraction: float = 0.05
    cache_dir: str = "~/.cache/devinterp/corpus"

    def validate(self) -> None:
        super().validate()
        require(self.source in SOURCES, "source", self.source, f"not one of {', '.join(SOURCES)}")
        require(512 <= self.vocab_size <= 65536, "vocab_size", self.vocab_size, "must be in [512, 65536]")
        require(0 < self.eval_fraction < 0.5, "eval_fraction", self.eval_fraction, "must be in (0, 0.5)")

    def needed_vocab_size(self) -> int:
        return self.vocab_size


def corpus_documents(source: str) -> list[str]:
    """The documents of a source (module docstring), in a fixed order."""
    library = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for root, dirs, names in os.walk(library):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        files += [Path(root) / name for name in sorted(names) if name.endswith(".py")]
    if source == "code":
        return [text for path in files if (text := _read(path))]
    import pydoc_data.topics  # the language reference's topics (every CPython has them): only for docs

    documents = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    for path in files:
        try:
            tree = ast.parse(_read(path))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring and len(docstring) >= MIN_DOCSTRING:
                    documents.append(docstring)
    return documents


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def train_tokenizer(documents: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (`tokenizers.Tokenizer`) trained on `documents`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # only when a vocabulary is trained

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def corpus_tokens(source: str, vocab_size: int, cache_dir: Path) -> tuple[torch.Tensor, Path]:
    """The token stream of a source (1-D int64) and its tokenizer file, from the cache or built into it."""
    documents = corpus_documents(source)
    text = "\n\n".join(documents)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    stem = Path(cache_dir).expanduser() / f"{source}-{digest}-v{vocab_size}"
    tokens_path, tokenizer_path = stem.with_suffix(".safetensors"), stem.with_suffix(".tokenizer.json")
    if tokens_path.exists() and tokenizer_path.exists():
        return load_file(tokens_path)["tokens"], tokenizer_path
    tokenizer = train_tokenizer(documents, vocab_size)
    separator = tokenizer.encode("\n\n").ids
    ids = [i for encoding in tokenizer.encode_batch(documents) for i in [*encoding.ids, *separator]]
    tokens = torch.tensor(ids, dtype=torch.int64)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tokenizer_path, tokenizer.to_str())
    tmp = tmp_path_for(tokens_path)
    save_file({"tokens": tokens}, tmp)
    os.replace(tmp, tokens_path)  # atomic: a reader sees the whole file or none
    return tokens, tokenizer_path


@dataclass(frozen=True)
class CorpusTask(StreamWindows):
    seq_len: int
    seed: int
    source: str = "docs"
    vocab_size: int = 4096
    eval_size: int = 256
    eval_fraction: float = 0.05
    cache_dir: str = "~/.cache/devinterp/corpus"
    name: str = "corpus"
    tokens: torch.Tensor = field(init=False, repr=False, compare=False)
    tokenizer_path: Path = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        tokens, tokenizer_path = corpus_tokens(self.source, self.vocab_size, Path(self.cache_dir))
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "tokenizer_path", tokenizer_path)

    @property
    def stream(self) -> torch.Tensor:
        return self.tokens
