"""The README's "Bring your own run" examples, executed: a plain loop with Monitor, a Trainer with
DevinterpCallback, its checkpoint folders analysed and reported from the command line, stages of a
plain table. The only changes: shorter runs, a smaller model, a sparser schedule, the tiny callback
settings."""
import re
import shlex
from pathlib import Path

import torch

from devinterp.cli import analyze as analyze_app
from devinterp.cli import report as report_app
from devinterp.store import checkpoints, read_metrics
from devinterp.training.schedule import CheckpointConfig
from tests.helpers import run_app
from tests.monitor.tiny import TINY_STUDY, cli_overrides

README = Path(__file__).parents[2] / "README.md"
SECTION = "## Bring your own run"
# (README text, what the test runs instead): each must occur in the section
SUBSTITUTIONS = [("steps = 200", "steps = 60"), ("n_embd=32, n_layer=2", "n_embd=16, n_layer=1"),
                 ('callbacks="study"', "callbacks=TINY_STUDY, checkpoints=SPARSE"), ("save_steps=25", "save_steps=15")]


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index(SECTION)
    section = text[start:text.index("\n## ", start + len(SECTION))]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)


def test_the_bring_your_own_run_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = section_blocks()
    assert [kind for kind, _ in blocks] == ["python", "python", "bash", "python"]
    code = "\n".join(body for kind, body in blocks if kind == "python")
    for readme, ours in SUBSTITUTIONS:
        assert readme in code, readme
        code = code.replace(readme, ours)
    python_blocks = code.split("\nimport numpy as np\n")  # the last block (stages of a table) runs at the end
    namespace = {"TINY_STUDY": TINY_STUDY, "SPARSE": CheckpointConfig(log=4, linear=3)}
    exec(compile(python_blocks[0], str(README), "exec"), namespace)  # noqa: S102 - the README's own code

    for run_dir in (tmp_path / "runs" / "mine", tmp_path / "out" / "devinterp"):
        metrics = read_metrics(run_dir)
        saved = [info.step for info in checkpoints.list_checkpoints(run_dir)]
        assert saved[0] == 0 and saved[-1] == 60 and len(saved) >= 6, (run_dir, saved)
        for name in ("eval/loss", "llc/mean", "hessian/top_1"):
            assert sorted(metrics[metrics.name == name].step) == saved, (run_dir, name)

    commands = [shlex.split(line) for line in dict(blocks)["bash"].splitlines() if line.startswith("devinterp-")]
    assert [argv[0] for argv in commands] == ["devinterp-analyze", "devinterp-report"]
    analyze_argv = [arg for arg in commands[0] if arg != "callbacks=study"] + cli_overrides() + ["progress=false"]
    assert run_app(monkeypatch, analyze_app.main, *analyze_argv) == 0
    assert run_app(monkeypatch, report_app.main, *commands[1]) == 0
    posthoc = tmp_path / "out" / "posthoc"
    assert [info.step for info in checkpoints.list_checkpoints(posthoc)] == [15, 30, 45, 60]
    assert (posthoc / "report" / "stages.csv").is_file()

    capsys.readouterr()
    exec(compile("import numpy as np\n" + python_blocks[1], str(README), "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out
    assert re.search(r"\bA\b", printed) and re.search(r"\bB\b", printed), printed
    assert torch.load(tmp_path / "tokens.pt").shape == (512, 16)
