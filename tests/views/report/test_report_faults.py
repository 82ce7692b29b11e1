"""The report under faults: damaged files are left out and named; a read-only run directory."""
import runpy
import shutil
import sys

import pytest

from devinterp.cli import report as report_cli
from tests.fault_injection import exit_code, assert_untouched, damage_one_of_each, digest


def run_report(monkeypatch, *args) -> int:
    return exit_code(monkeypatch, report_cli.main, "devinterp-report", *args)


def test_one_damaged_file_of_each_kind_is_named_and_the_report_written(small_runs, tmp_path, monkeypatch, capsys):
    """Written to out_dir=, so the run directory must come out byte-for-byte unchanged."""
    run_dir = shutil.copytree(small_runs[0], tmp_path / "run")
    damaged = damage_one_of_each(run_dir)
    before = digest(run_dir)
    out_dir = tmp_path / "elsewhere" / "report"
    assert run_report(monkeypatch, f"run_dir={run_dir}", f"out_dir={out_dir}", "device=cpu") == 0
    out = capsys.readouterr().out
    page = (out_dir / "index.html").read_text()
    for kind in ("weights", "config", "metrics_part"):  # what the report reads, named in the notes
        assert f"note: " in out and str(damaged[kind][0]) in out, kind
        assert str(damaged[kind][0]) in page, kind
    assert "skipped checkpoint step 4" in out and "skipped checkpoint step 10" in out
    assert (out_dir / "stages.csv").is_file() and (out_dir / "loss.png").is_file()
    assert digest(run_dir) == before
    assert_untouched(damaged)


def test_a_read_only_run_directory_is_a_clear_error(small_runs, tmpfs, monkeypatch, capsys):
    mount = tmpfs("4m")
    run_dir = shutil.copytree(small_runs[0], mount.path / "run")
    mount.remount("ro")
    assert run_report(monkeypatch, f"run_dir={run_dir}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"devinterp-report: error: run_dir='{run_dir}'")
    assert "read-only" in err and "out_dir=" in err
    assert run_report(monkeypatch, f"run_dir={run_dir}", f"out_dir={run_dir / 'elsewhere'}") == 2
    assert "out_dir=" in capsys.readouterr().err


def test_python_m_devinterp_report(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["python -m devinterp.report", f"run_dir={tmp_path / 'none'}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("devinterp.report", run_name="__main__")
    assert exit_info.value.code == 2 and "devinterp-report: error: run_dir=" in capsys.readouterr().err
