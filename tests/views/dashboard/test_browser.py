"""End to end in headless Chromium: the dashboard serves a real run, draws it, and follows it live.

Needs Debian's `chromium` and `chromium-driver` (the Makefile bootstrap installs them when it can)
and selenium; skipped with a message saying which is missing otherwise. The dashboard runs as a
subprocess (`python -m devinterp.dashboard`) on a free 127.0.0.1 port and is always stopped.
Screenshots go to the test's tmp dir (and to $DEVINTERP_SCREENSHOT_DIR if set).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devinterp.store import MetricsWriter, read_metrics
from devinterp.cli.train import compose_train_config, run

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--window-size=1600,1400"]
CHARTS = ("loss", "icl", "llc", "hessian", "prefix_matching", "previous_token")
# JS: for every chart, the traces drawn by plotly as [run id, metric, number of points].
TRACES_JS = """
const out = {};
for (const name of arguments[0]) {
  const gd = document.querySelector('#graph-' + name + ' .js-plotly-plot');
  out[name] = gd && gd.data ? gd.data.map(t => [t.meta ? t.meta[0] : null, t.meta ? t.meta[1] : null, t.x.length]) : null;
  out[name + ':shapes'] = gd && gd.layout && gd.layout.shapes ? gd.layout.shapes.length : 0;
}
return out;
"""


def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install the Debian package {package} (make install does, as root)"
    return None


pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll `condition()` until it returns something truthy (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dashboard:
    """`python -m devinterp.dashboard` in a subprocess on a free local port."""

    def __init__(self, runs_dir: Path, log_path: Path, interval: float = 0.5):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devinterp.dashboard", f"runs_dir={runs_dir}", f"port={self.port}",
             "host=127.0.0.1", f"interval={interval}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.log_path = log_path

    def wait_ready(self, timeout: float = 30) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_for(up, timeout, f"the dashboard at {self.url}", interval=0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def dashboard(tmp_path):
    started = []

    def start(runs_dir: Path) -> Dashboard:
        server = Dashboard(runs_dir, tmp_path / f"dashboard{len(started)}.log")
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
        assert server.proc.returncode is not None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    yield driver
    driver.quit()


def chart_traces(driver) -> dict:
    return driver.execute_script(TRACES_JS, list(CHARTS))


def points(traces: dict, chart: str, metric: str) -> int | None:
    for _run, name, n in traces.get(chart) or []:
        if name == metric:
            return n
    return None


def requested_urls(driver) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


def save_screenshot(driver, path: Path) -> Path:
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000  # a real rendering, not a blank page
    if os.environ.get("DEVINTERP_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["DEVINTERP_SCREENSHOT_DIR"]) / path.name)
    return path


def click_run(driver, run_id: str) -> None:
    driver.execute_script("""
        for (const label of document.querySelectorAll('#runs label'))
          if (label.textContent.includes(arguments[0])) { label.querySelector('input').click(); return; }
        throw new Error('no run ' + arguments[0]);""", run_id)


def test_dashboard_follows_a_live_run(tmp_path, tiny_overrides, dashboard, browser):
    result = run(compose_train_config(tiny_overrides), tiny_overrides)
    run_dir, runs_dir = Path(result.run_dir), tmp_path / "runs"
    run_id = run_dir.relative_to(runs_dir).as_posix()
    broken = runs_dir / "broken"  # a foreign, corrupted directory next to the real run
    broken.mkdir()
    (broken / "config.yaml").write_text("whatever: 1\n")
    (broken / "status.json").write_text('{"state": "train')
    metrics = read_metrics(run_dir)
    n_eval = int((metrics.name == "eval/loss").sum())
    n_train = int((metrics.name == "train/loss").sum())
    n_heads = {name: int((metrics.name == name).sum())
               for name in ("induction/prefix_matching/L1H0", "induction/previous_token/L0H1")}

    server = dashboard(runs_dir)
    browser.get(server.url)
    traces = wait_for(lambda: (t := chart_traces(browser)) and points(t, "loss", "eval/loss") and t, 30,
                      "the loss chart to draw")
    assert points(traces, "loss", "eval/loss") == n_eval
    assert points(traces, "loss", "train/loss") == n_train
    assert points(traces, "icl", "eval/icl_score") == n_eval
    assert traces["llc"] == [] and traces["llc:shapes"] == 0  # no LLC rows, no stages yet
    run_list = browser.find_element("id", "runs").text
    assert run_id in run_list and "broken" in run_list and "error" in run_list and "finished" in run_list
    browser.execute_script("window.__not_reloaded = true")

    # The run goes on (as a resumed run or a post-hoc analysis would): new part files appear.
    last = int(metrics.step.max())
    writer = MetricsWriter(run_dir)
    for step in (last + 5, last + 10):
        writer.add(step, {"train/loss": 2.0, "eval/loss": 2.1, "eval/icl_score": -1.0,
                          "llc/mean": 12.0 + step / 10, "llc/std": 1.5, "hessian/top_1": 3.0, "hessian/trace": 40.0,
                          "induction/prefix_matching/L1H0": 0.8, "induction/previous_token/L0H1": 0.7})
    writer.flush()
    (run_dir / "report").mkdir()
    (run_dir / "report" / "stages.csv").write_text(f"start_step,end_step,type\n0,{last},A\n{last},{last + 10},B\n")

    def grown():
        t = chart_traces(browser)
        return t if points(t, "loss", "eval/loss") == n_eval + 2 and points(t, "llc", "llc/mean") == 2 else None

    traces = wait_for(grown, 15, "the appended points to appear")
    assert points(traces, "loss", "train/loss") == n_train + 2
    assert points(traces, "llc", "llc/std") == 4  # the band: 2 points there and back
    assert points(traces, "hessian", "hessian/top_1") == 2 and points(traces, "hessian", "hessian/trace") == 2
    for chart, name in (("prefix_matching", "induction/prefix_matching/L1H0"),
                        ("previous_token", "induction/previous_token/L0H1")):
        assert points(traces, chart, name) == n_heads[name] + 2
    assert wait_for(lambda: chart_traces(browser)["llc:shapes"] == 2, 10, "the two stages to be shaded")
    assert browser.execute_script("return window.__not_reloaded === true"), "the page was reloaded"

    # Selecting the corrupted run shows its error and keeps the real run's charts.
    click_run(browser, "broken")
    table = wait_for(lambda: "status.json is unreadable" in (t := browser.find_element("id", "run-table").text) and t,
                     10, "the broken run's error in the run table")
    assert run_id in table
    assert points(chart_traces(browser), "loss", "eval/loss") == n_eval + 2

    base = server.url.rstrip("/")
    foreign = {u for u in requested_urls(browser) if u.startswith(("http:", "https:", "ws:", "wss:")) and not u.startswith(base)}
    assert not foreign, f"the page requested URLs outside the dashboard: {sorted(foreign)}"
    save_screenshot(browser, tmp_path / "dashboard_live.png")


def test_time_to_show_a_run_with_100_checkpoints(tmp_path, synthetic_run, dashboard, browser):
    """A finished run with ~110 checkpoints (LLC, Hessian, 16 per-head scores each) and stages:
    time from navigation to all six charts drawn with every point, on a cold server cache."""
    run_dir = synthetic_run("induction/seed0", steps=2000, n_log=50, n_linear=60)
    n_checkpoints = len(json.loads((run_dir / "checkpoints" / "index.json").read_text()))
    assert n_checkpoints >= 100
    server = dashboard(tmp_path / "runs")
    started = time.perf_counter()
    browser.get(server.url)

    def complete():
        t = chart_traces(browser)
        full = [points(t, "loss", "eval/loss"), points(t, "llc", "llc/mean"), points(t, "hessian", "hessian/trace"),
                points(t, "icl", "eval/icl_score"), points(t, "prefix_matching", "induction/prefix_matching/L1H3"),
                points(t, "previous_token", "induction/previous_token/L0H0")]
        return t if full == [n_checkpoints] * 6 else None

    traces = wait_for(complete, 30, "all six charts to draw", interval=0.05)
    seconds = time.perf_counter() - started
    print(f"\n{n_checkpoints} checkpoints: page fully drawn {seconds:.2f} s after navigation")
    assert len(traces["prefix_matching"]) == 8 and traces["llc:shapes"] == 4
    assert seconds < 20
    save_screenshot(browser, tmp_path / "dashboard_100_checkpoints.png")
    click_run(browser, "induction/seed0")  # leave the module's browser on an empty selection
