"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) logs in with the cluster's token and reads the
page's DOM: a row per trial, a line per trial, the cluster's nodes; a result appended
to a trial's file shows up without a reload. A screenshot is kept in
``target/test-output/dashboard.png``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import sunray
from conftest import SUNRAY
from sunray import tune
from sunray.tune.schedulers import ASHAScheduler

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
OUTPUT = Path(os.environ.get("SUNRAY_TEST_OUTPUT", "target/test-output"))


def _climb(config):
    for i in range(8):
        tune.report({"loss": 1 / (1 + config["lr"] * (i + 1))})


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver (.ci/run installs Debian's packages)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="needs selenium (./test.sh installs it)"
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1300"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    yield d
    d.quit()


def _head_token(tmp: Path) -> str:
    heads = list((tmp / f"sunray-{os.getuid()}").glob("head-*/token"))
    assert len(heads) == 1, heads
    return heads[0].read_text().strip()


def test_the_page_shows_every_trial_and_a_line_per_trial(cluster, tmp, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sunray.init(cluster.address)
    results = tmp / "results"
    grid = tune.Tuner(
        _climb,
        param_space={"lr": tune.loguniform(0.01, 10)},
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            num_samples=8,
            scheduler=ASHAScheduler(max_t=8, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(name="tune_asha", storage_path=str(results), verbose=0),
    ).fit()
    assert len(grid) == 8

    @sunray.remote
    class Keeper:
        def ping(self):
            print("KEEPER-SAYS-HI")
            return "pong"

    keeper = Keeper.options(name="keeper").remote()
    assert sunray.get(keeper.ping.remote()) == "pong"
    dash = subprocess.Popen(
        [SUNRAY, "dashboard", "--address", cluster.address, "--results", str(results)]
        + ["--port", "0"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = dash.stdout.readline().split()[3]
        assert url.startswith("http://127.0.0.1:"), url
        browser.get(url)
        browser.find_element(By.ID, "token").send_keys(_head_token(tmp))
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        from selenium.common.exceptions import StaleElementReferenceException

        # The page redraws its tables every 2 s: an element read mid-redraw is stale,
        # and the next try reads the new one.
        wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))

        def count(css):
            return len(browser.find_elements(By.CSS_SELECTOR, css))

        wait.until(lambda _: count("#trials tbody tr") == 8)
        wait.until(lambda _: count("svg#curves path.curve") == 8)
        wait.until(lambda _: count("#nodes tbody tr") == 3)
        # The trials ran as tasks of one function: 8 of them ended.
        fn_rows = [
            r.text.split() for r in browser.find_elements(By.CSS_SELECTOR, "#functions tbody tr")
        ]
        assert any(row[-1] == "8" for row in fn_rows), fn_rows
        # The actor, alive, and what its call printed (kept by the head, per task).
        wait.until(lambda _: count("#actors tbody tr") == 1)
        actor = wait.until(lambda _: browser.find_element(By.CSS_SELECTOR, "#actors tbody tr").text)
        assert "Keeper" in actor and "keeper" in actor and "alive" in actor, actor
        from selenium.webdriver.support.ui import Select

        def pick_the_call(_):
            logs = Select(browser.find_element(By.ID, "logname"))
            call = next((o.text for o in logs.options if "Keeper.ping" in o.text), None)
            if call is not None:
                logs.select_by_visible_text(call)
            return call

        wait.until(pick_the_call)
        wait.until(lambda _: "KEEPER-SAYS-HI" in browser.find_element(By.ID, "log").text)
        assert count("svg#curves path.curve.best") == 1
        assert count("svg#curves line.cut") >= 1, "ASHA's cut-offs are drawn"
        assert count("svg#scatter circle.point") == 8
        ids = {r.trial_id for r in grid}
        shown = {
            tr.get_attribute("data-trial")
            for tr in browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
        }
        assert shown == ids
        best = grid.get_best_result()
        row = browser.find_element(By.CSS_SELECTOR, "#trials tbody tr.best")
        assert row.get_attribute("data-trial") == best.trial_id

        # A new result (as a running trial appends it) appears without a reload.
        r = grid[0]
        file = Path(r.path, "result.json")
        last = json.loads(file.read_text().splitlines()[-1])
        iters = last["training_iteration"]
        with open(file, "a") as f:
            f.write(json.dumps({**last, "loss": 0.5, "training_iteration": iters + 1}) + "\n")
        cell = f'#trials tbody tr[data-trial="{r.trial_id}"]'
        wait.until(
            lambda _: browser.find_element(By.CSS_SELECTOR, cell).text.split()[-3] == str(iters + 1)
        )
        OUTPUT.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(OUTPUT / "dashboard.png"))
    finally:
        dash.kill()
        dash.wait()
