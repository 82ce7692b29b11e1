"""The dashboard only reads: an hour of polling leaves a run directory (damaged files and all)
byte-for-byte as it was, and each damaged file it reads is named as that run's problem."""
import shutil
import time
from types import SimpleNamespace

from devinterp.views.dashboard import app as dash_app
from devinterp.views.dashboard.config import DashboardConfig
from devinterp.store.atomic import atomic_write_json
from devinterp.store.metrics import PartCache
from tests.fault_injection import assert_untouched, damage_one_of_each, digest

# An hour of the dashboard's clock in 120 polls, 30 s apart (at the default 2 s interval an hour
# is 1800 polls, which take ~40 s here; every poll does the same reads).
POLLS, SECONDS_PER_POLL = 120, 30.0


def dash_requests(client, selected: list[str]):
    """A function that sends one poll: every callback the page fires on a tick of `poll`, with
    the state (the chart signature) the page would hold."""
    dependencies = client.get("/_dash-dependencies").get_json()
    values = {"poll.n_intervals": 0, "runs.value": selected, "axis-options.value": [], "signature.data": None}

    def send(n: int) -> list[int]:
        values["poll.n_intervals"] = n
        codes = []
        for dep in dependencies:
            def props(items):
                return [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

            outputs = [dict(zip(("id", "property"), o.split("."))) for o in dep["output"].strip(".").split("...")]
            body = {"output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
                    "inputs": props(dep["inputs"]), "state": props(dep["state"]),
                    "changedPropIds": ["poll.n_intervals"]}
            response = client.post("/_dash-update-component", json=body)
            codes.append(response.status_code)
            if response.status_code == 200 and "signature" in response.get_json()["response"]:
                values["signature.data"] = response.get_json()["response"]["signature"]["data"]
        return codes

    return send


def test_an_hour_of_polling_changes_nothing(small_runs, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    run_dir = shutil.copytree(small_runs[0], runs_dir / "run")
    damaged = damage_one_of_each(run_dir)
    start = time.time()
    atomic_write_json(run_dir / "analysis_status.json", {"state": "analysing", "step": 4, "updated": start})
    (run_dir / "report").mkdir()
    (run_dir / "report" / "stages.csv").write_text("start_step,end_step,type\n0,4,A\n4,20,other\n")
    before = digest(runs_dir)
    clock = SimpleNamespace(now=start)
    monkeypatch.setattr(dash_app, "time", SimpleNamespace(time=lambda: clock.now))

    client = dash_app.create_app(DashboardConfig(runs_dir=runs_dir)).server.test_client()
    assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
    poll = dash_requests(client, ["run"])
    first = poll(1)
    assert first == [200, 200, 200], first  # run list, run table, charts
    for n in range(2, POLLS + 1):
        clock.now = start + n * SECONDS_PER_POLL
        codes = poll(n)
        assert codes[:2] == [200, 200] and codes[2] in (200, 204), codes  # 204: charts unchanged
    assert digest(runs_dir) == before
    assert_untouched(damaged)
    runs = dash_app.load_selected(DashboardConfig(runs_dir=runs_dir), ["run"], PartCache())
    assert runs[0].status.badge == "stale"  # the hour went by on the dashboard's clock
    problems = " ".join(runs[0].errors)
    for kind in ("status", "index", "metrics_part"):  # the damaged files the dashboard reads, named
        assert damaged[kind][0].name in problems, (kind, problems)
    assert len(runs[0].metrics) > 0


def test_the_served_dashboard_listens_on_localhost_by_default(tmp_path, monkeypatch, capsys):
    """The command line, down to the server call: 127.0.0.1 unless host= says otherwise."""
    from dash import Dash

    from devinterp.cli import dashboard as cli

    calls = []
    monkeypatch.setattr(Dash, "run", lambda self, **kwargs: calls.append(kwargs))
    cli.main([f"runs_dir={tmp_path}", "port=0"])
    cli.main([f"runs_dir={tmp_path}", "port=0", "host=0.0.0.0"])
    assert [c["host"] for c in calls] == ["127.0.0.1", "0.0.0.0"]
    assert "http://127.0.0.1:0/" in capsys.readouterr().out
