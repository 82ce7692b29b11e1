"""devinterp.views.report.series: LLC series per settings hash, the primary one, the metrics view."""
import pandas as pd
import pytest

from devinterp.views.report.series import choose_primary, is_complete, metrics_view, seed_runs, split_llc_series


def rows(callback, settings, values: dict, steps=(0, 10, 20)) -> list[dict]:
    return [{"step": s, "name": n, "value": v + s, "callback": callback, "settings": settings}
            for s in steps for n, v in values.items()]


@pytest.fixture
def metrics():
    # written in this order: the live series, then a post-hoc one (newer), a partial one, the loss
    return pd.DataFrame(rows("llc", "live", {"llc/mean": 100.0, "llc/healthy": 1.0})
                        + rows("llc", "gamma30", {"llc/mean": 300.0, "llc/healthy": 0.0})
                        + rows("llc", "partial", {"llc/mean": 500.0}, steps=(0, 10))
                        + rows("loss", "x", {"eval/loss": 2.0})
                        + rows("llc", "perhead", {"llc/L0H0/mean": 7.0}))


def test_split_and_complete(metrics):
    series = split_llc_series(metrics, "llc/mean")
    assert list(series) == ["live", "gamma30", "partial"]  # first written first; 'perhead' wrote no llc/mean
    assert series["live"].steps == (0, 10, 20) and set(series["live"].rows["name"]) == {"llc/mean", "llc/healthy"}
    assert is_complete(series["gamma30"], series["live"]) and not is_complete(series["partial"], series["live"])


def test_choose_primary_order_and_unknown_hash(metrics):
    series = split_llc_series(metrics, "llc/mean")
    assert choose_primary(series, None, "live", set())[0] == "live"
    assert choose_primary(series, "gamma30", "live", set())[0] == "gamma30"
    assert choose_primary(series, None, None, {"partial", "live"})[0] == "live"  # auto-calibrated, most steps
    assert choose_primary(series, None, "gone", {"partial"})[0] == "partial"
    assert choose_primary(series, None, None, set())[0] == "live"  # most steps, then the first written
    assert choose_primary(dict(reversed(series.items())), None, None, set())[0] == "gamma30"
    with pytest.raises(ValueError, match="llc_settings='abc123'.*available: gamma30, live, partial"):
        choose_primary(series, "abc123", "live", set())


def test_view_takes_the_primary_series_not_the_newest(metrics):
    series = split_llc_series(metrics, "llc/mean")
    view = metrics_view(metrics, series, "live")
    wide = view.pivot(index="step", columns="name", values="value")
    assert list(wide["llc/mean"]) == [100.0, 110.0, 120.0] and list(wide["llc/healthy"]) == [1.0, 11.0, 21.0]
    assert list(wide["eval/loss"]) == [2.0, 12.0, 22.0] and list(wide["llc/L0H0/mean"]) == [7.0, 17.0, 27.0]
    assert not view.duplicated(["step", "name"]).any()
    newest = metrics_view(metrics, series, None).pivot(index="step", columns="name", values="value")
    assert newest.loc[20, "llc/mean"] == 320.0  # what read_metrics(latest_only) alone gives
    assert metrics_view(metrics, series, "gamma30").query("name == 'llc/mean'")["value"].tolist() == [300, 310, 320]


def test_seed_runs(tmp_path):
    for name in ("b_seed1", "a_seed0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "other").mkdir()
    assert [p.name for p in seed_runs(tmp_path)] == ["a_seed0", "b_seed1"]
    assert seed_runs(tmp_path / "a_seed0") == []


def test_live_settings_hash_is_the_hash_of_the_runs_own_llc_callback(tmp_path):
    from omegaconf import OmegaConf

    from devinterp.callbacks import build_callbacks
    from devinterp.views.report.series import live_settings_hash
    from devinterp.cli.train import compose_train_config

    cfg = compose_train_config(["callbacks=study", "callbacks.llc.localization=30"])
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)
    expected = next(c for c in build_callbacks(cfg.callbacks) if c.name == "llc").settings_hash
    assert live_settings_hash(tmp_path) == expected
    OmegaConf.save(compose_train_config(["callbacks=[loss]"]), tmp_path / "config.yaml", resolve=True)
    assert live_settings_hash(tmp_path) is None
