"""DevinterpCallback: a transformers.Trainer drives a Monitor; its run directory is a normal run."""
import torch
from transformers import Trainer, TrainingArguments

from devinterp.cli import report as report_app
from devinterp.integrations.hf import PREFIX, DevinterpCallback
from devinterp.store import checkpoints, read_metrics
from devinterp.training.schedule import CheckpointConfig, checkpoint_schedule
from tests.monitor.tiny import TINY_STUDY, counting_tokens, tiny_gpt2


class Rows(torch.utils.data.Dataset):
    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


def test_trainer_run_has_loss_llc_hessian_at_its_checkpoints_and_a_stage_report(tmp_path, monkeypatch):
    tokens = counting_tokens()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=40, per_device_train_batch_size=16,
                             learning_rate=1e-2, logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=0)
    callback = DevinterpCallback(data=tokens, callbacks=TINY_STUDY, checkpoints=CheckpointConfig(log=6, linear=3))
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Rows(tokens), callbacks=[callback])
    trainer.train()

    run_dir = tmp_path / "out" / "devinterp"
    assert callback.monitor.run_dir == run_dir
    schedule = checkpoint_schedule(40, 6, 3)
    assert [info.step for info in checkpoints.list_checkpoints(run_dir)] == schedule
    metrics = read_metrics(run_dir)
    for name in ("eval/loss", "llc/mean", "hessian/top_1"):
        assert sorted(metrics[metrics.name == name].step) == schedule, name
    # train/loss where the Trainer logged it: every logging_steps, and at the steps it measured (it asks for a log)
    assert set(metrics[metrics.name == "train/loss"].step) == {10, 20, 30, 40} | (set(schedule) - {0})
    loss = metrics[metrics.name == "train/fixed_loss"].set_index("step").value
    assert loss[40] < loss[0] - 1.0  # it learnt
    # the Trainer's own log history carries the measurements, at the steps they describe
    logged = {(entry["step"], key) for entry in trainer.state.log_history for key in entry if key.startswith(PREFIX)}
    assert {(step, PREFIX + "llc/mean") for step in schedule} <= logged

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["devinterp-report", f"run_dir={run_dir}"])
    report_app.main()
    stages = (run_dir / "report" / "stages.csv").read_text().splitlines()
    assert len(stages) >= 2 and any(",A," in line or ",B," in line for line in stages[1:])
