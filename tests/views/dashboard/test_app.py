"""The dashboard app without a browser: command line, served HTML and assets, broken runs."""
import re
import socket
from pathlib import Path

import pytest

from devinterp.views.dashboard import app as dash_app
from devinterp.cli import dashboard as cli
from devinterp.views.dashboard.config import DashboardConfig
from devinterp.store.metrics import PartCache


def run_cli(capsys, *args):
    try:
        cli.main(list(args))
    except SystemExit as e:
        return e.code, capsys.readouterr().err.strip()
    raise AssertionError("expected an error exit")


@pytest.mark.parametrize("args,fragment", [
    (["foo=1"], "unknown key 'foo'"),
    (["port=abc"], "port=abc"),
    (["port=70000"], "port=70000"),
    (["interval=0"], "interval=0.0"),
    (["interval=soon"], "interval=soon"),
    (["stale_after=-1"], "stale_after=-1.0"),
    (["runs_dir=/does/not/exist"], "runs_dir=/does/not/exist"),
    (["runs_dir"], "runs_dir: expected key=value"),
    (["host=no-such-host.invalid"], "host=no-such-host.invalid"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, args, fragment):
    args = [f"runs_dir={tmp_path}", *args] if not any(a.startswith("runs_dir") for a in args) else args
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("devinterp-dashboard: error:") and fragment in err, err


def test_port_in_use_is_reported(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_cli(capsys, f"runs_dir={tmp_path}", f"port={port}")
    assert code == 2 and f"port={port}" in err


def test_defaults_bind_localhost():
    cfg = cli.parse_args([f"runs_dir={Path.cwd()}"])
    assert cfg.host == "127.0.0.1" and cfg.interval == 2.0


def test_page_and_assets_are_served_locally(tmp_path, synthetic_run):
    synthetic_run("s/seed0", steps=50, n_log=3, n_linear=3)
    client = dash_app.create_app(DashboardConfig(runs_dir=tmp_path / "runs")).server.test_client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("dash_renderer" in u for u in urls) and any("dash_core_components" in u for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url  # same origin, no CDN
        assert client.get(url).status_code == 200, url
    assert '"disable_version_check":true' in html  # no call home to dash-version.plotly.com
    layout = client.get("/_dash-layout").get_json()
    assert "s/seed0" in str(layout)  # the run list, newest run selected


def test_a_broken_run_is_reported_without_hiding_the_others(tmp_path, synthetic_run):
    good = synthetic_run("good", steps=50, n_log=3, n_linear=3)
    bad = tmp_path / "runs" / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("x: 1\n")
    (bad / "status.json").write_text("{truncated")
    (bad / "metrics.parquet").mkdir()
    (bad / "metrics.parquet" / "part-1-x.parquet").write_bytes(b"garbage")
    cfg = DashboardConfig(runs_dir=tmp_path / "runs")
    options = dash_app.run_options(cfg, now=0.0)
    assert [o["value"] for o in options] == ["bad", "good"]
    assert "error" in str(options[0]["label"]) and "finished" in str(options[1]["label"])
    runs = dash_app.load_selected(cfg, ["bad", "good", "../escape"], PartCache())
    assert [r.run_id for r in runs] == ["bad", "good"]
    assert runs[0].errors and runs[1].errors == ()
    table = str(dash_app.run_table(runs))
    assert "status.json is unreadable" in table and "part-1-x.parquet" in table
    assert good.exists()
