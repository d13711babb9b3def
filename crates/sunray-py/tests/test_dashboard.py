"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) logs in with the cluster's token and reads the
page's DOM: a row per trial, a line per trial, the cluster's nodes; a result appended
to a trial's file shows up without a reload. A screenshot is kept in
``target/test-output/dashboard.png``. Then an experiment and a cluster whose every name
is a piece of HTML meant to run script: none runs, and each shows as the text it is."""

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
    # The console (Content-Security-Policy violations are reported there).
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    yield d
    d.quit()


def _head_token(tmp: Path) -> str:
    heads = list((tmp / f"sunray-{os.getuid()}").glob("head-*/token"))
    assert len(heads) == 1, heads
    return heads[0].read_text().strip()


def _dashboard(cluster, results: Path) -> subprocess.Popen:
    """``sunray dashboard`` of ``cluster`` and ``results`` on a free port: its first line
    says where."""
    return subprocess.Popen(
        [SUNRAY, "dashboard", "--address", cluster.address, "--results", str(results)]
        + ["--port", "0"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


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
    dash = _dashboard(cluster, results)
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


# What an attacker who can write into a results folder (or name a task, an actor, a log)
# puts there: each tries to run script if the page ever parses it as HTML. Statuses are
# lowercase: the experiment list shows them lowercased.
DIR = '<img src=x onerror="window.__xss=1"> exp'
TRIAL_A = "</script><script>window.__xss=2</script>"
TRIAL_B = '<img src=x onerror="window.__xss=3">'
STATUS_A = '<img src=x onerror="window.__xss=4">'
STATUS_B = "<svg onload=alert(5)>"
KEY = '<img src=x onerror="window.__xss=6">'
VALUE_A = "</script><script>window.__xss=7</script>"
VALUE_B = '"><svg onload=alert(8)>'
KEY2 = '<iframe srcdoc="<script>parent.__xss=9</script>">'
METRIC = '<img src=x onerror="window.__xss=10">'
NODE_IP = "<svg onload=alert(11)>"
FN = '<img src=x onerror="window.__xss=12">'
LINE = "</script><script>window.__xss=13</script>"
CLASS = "<svg onload=alert(14)>"
ACTOR = '<img src=x onerror="window.__xss=15">'
LOGFILE = '<img src=x onerror="window.__xss=16">.log'
LOGLINE = "<svg onload=alert(17)>"


def _hostile_experiment(results: Path) -> None:
    exp = results / DIR
    for i, (trial, value, loss) in enumerate([(TRIAL_A, VALUE_A, 0.5), (TRIAL_B, VALUE_B, 0.2)]):
        d = exp / f"train_abcde_0000{i}_{i}_2026-12-08_00-00-00"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({KEY: value, KEY2: 0.1 * (i + 1)}))
        rows = [
            {"training_iteration": it, METRIC: loss * it, "trial_id": trial, "node_ip": NODE_IP}
            for it in (1, 2)
        ]
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The second trial's status from sunray's end marker, the first's from Ray's state.
    (exp / "train_abcde_00001_1_2026-12-08_00-00-00" / ".trial_end.json").write_text(
        json.dumps({"status": STATUS_B})
    )
    state = {
        "trial_data": [[json.dumps({"trial_id": "abcde_00000", "status": STATUS_A}), "{}"]],
        "runner_data": {},
        "stats": {},
    }
    (exp / "experiment_state-2026-12-08_00-00-00.json").write_text(json.dumps(state))
    (exp / "experiment_state.json").write_text(json.dumps({"metric": METRIC, "mode": "min"}))


def test_names_that_are_html_show_as_text_and_never_run(cluster, tmp, browser):
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    results = tmp / "results"
    _hostile_experiment(results)
    (tmp / f"sunray-{os.getuid()}" / LOGFILE).write_text(f"first line\n{LOGLINE}\n")

    # A task and an actor whose names are HTML, printing HTML.
    sunray.init(cluster.address)

    def shout():
        print(LINE)
        return 1

    shout.__name__ = shout.__qualname__ = FN
    assert sunray.get(sunray.remote(shout).remote()) == 1

    def ping(self):
        print(LINE)
        return "pong"

    hostile_class = sunray.remote(type(CLASS, (), {"ping": ping}))
    actor = hostile_class.options(name=ACTOR).remote()
    assert sunray.get(actor.ping.remote()) == "pong"

    dash = _dashboard(cluster, results)
    try:
        url = dash.stdout.readline().split()[3]
        browser.get(url)
        browser.find_element(By.ID, "token").send_keys(_head_token(tmp))
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))

        # Read in one script each: the page redraws every 2 s, so elements found in one
        # call may be gone by the next (a stale reference).
        def texts(css):
            return browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]),"
                " e => e instanceof HTMLElement ? e.innerText : e.textContent)",
                css,
            )

        def attrs(css, name):
            return browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]),"
                " e => e.getAttribute(arguments[1]))",
                css,
                name,
            )

        def shown(css, text):
            """Some element matching ``css`` shows ``text`` literally (waits for it)."""
            wait.until(lambda _: any(text in t for t in texts(css)), f"{text!r} in {css}")

        # The experiment: its name, its statuses, its trials, config, metric, node.
        shown("#experiments li", DIR)
        shown("#experiments li small", f"1 {STATUS_A}")
        shown("#experiments li small", f"1 {STATUS_B}")
        shown("#exp-title", DIR)
        wait.until(lambda _: len(texts("#trials tbody tr")) == 2)
        assert attrs("#trials tbody tr", "data-trial") == [TRIAL_A, TRIAL_B]
        for text in (KEY, KEY2, METRIC):
            shown("#trials thead th", text)
        for text in (TRIAL_A, TRIAL_B, STATUS_A, STATUS_B, VALUE_A, VALUE_B, NODE_IP):
            shown("#trials tbody td", text)
        assert set(attrs("#trials tbody td:nth-child(2)", "class")) == {"status-other"}
        assert METRIC in texts("#metric option")
        assert KEY in texts("#param option")
        # The curves and the scatter: their labels and the trials they name.
        wait.until(lambda _: len(attrs("svg#curves path.curve", "data-trial")) == 2)
        assert sorted(attrs("svg#curves path.curve", "data-trial")) == sorted([TRIAL_A, TRIAL_B])
        shown("svg#curves text", METRIC)
        for text in (KEY, VALUE_A, VALUE_B):
            shown("svg#scatter text", text)

        # The cluster: the function, the actor's name and class, what they printed.
        shown("#functions td", FN)
        assert any(t.endswith(FN) for t in attrs("#functions td", "title"))
        shown("#actors td", ACTOR)
        shown("#actors td", CLASS)
        assert any(t.endswith("." + CLASS) for t in attrs("#actors td", "title"))

        def pick_log(label_part):
            def pick(_):
                logs = Select(browser.find_element(By.ID, "logname"))
                label = next((o.text for o in logs.options if label_part in o.text), None)
                if label is not None:
                    logs.select_by_visible_text(label)
                return label

            return pick

        wait.until(pick_log(FN))
        shown("#log", LINE)
        wait.until(pick_log(LOGFILE))
        shown("#log", LOGLINE)

        # Nothing of it ran: no flag set, no alert, no element it would have made, and
        # the browser blocked nothing (the page never tried to run any of it).
        assert browser.execute_script("return typeof window.__xss") == "undefined"
        try:
            alert = browser.switch_to.alert
            pytest.fail(f"an alert: {alert.text}")
        except NoAlertPresentException:
            pass
        made = browser.execute_script(
            "return document.querySelectorAll('img, iframe, main svg svg, script').length"
        )
        assert made == 1, "only the page's own script, no element made from data"
        blocked = [
            e["message"]
            for e in browser.get_log("browser")
            if "Content Security Policy" in e["message"] and "favicon" not in e["message"]
        ]
        assert not blocked, blocked
    finally:
        dash.kill()
        dash.wait()
