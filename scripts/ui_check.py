"""Browser check of the MLflow UI over a results store: do the methods' sequence runs and their metrics show up?

Starts `mlflow ui` (beside this Python) on the store, drives headless Chromium
(Debian's chromium + chromium-driver, through Selenium) to the experiment page
and to the compare view of the newest parent run of each method, asserts the
runs and their acc / bwt / forgetting values are on the pages, saves a
screenshot of each, and stops the server.

    python scripts/ui_check.py [sqlite:///results/mlflow.db] [--methods sft,sdft,sdpo]

Exit code 0 when every check passes, 1 when one fails, 2 when it cannot start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

METRICS = ("acc", "bwt", "forgetting")
# Flags that keep Chromium from reaching for the (closed) network or a GPU, which hangs it here.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000")
SEQUENCE_FILTER = "tags.`harness.kind` = 'sequence'"


class CheckFailed(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", nargs="?", default="sqlite:///results/mlflow.db", help="MLflow store URI (default: sqlite:///results/mlflow.db)")
    p.add_argument("--methods", default="sft,sdft,sdpo", help="comma- or space-separated; per method the newest parent run whose every stage used it")
    p.add_argument("--experiment", help="experiment (suite) name; default: the newest one holding runs of every method")
    p.add_argument("--screenshot", default="docs/mlflow-compare.png", help="compare-view screenshot")
    p.add_argument("--experiment-screenshot", default="docs/mlflow-experiment.png")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for the server and for each page")
    return p.parse_args(argv)


# ---------------------------------------------------------------- the store


def pick_runs(store: str, methods: list[str], experiment_name: str | None):
    """(experiment id, {method: parent run}) for the newest parent run of each method, finished ones first."""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    if experiment_name:
        found = client.get_experiment_by_name(experiment_name)
        if found is None:
            raise CheckFailed(f"{store}: no experiment {experiment_name!r}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    for experiment in experiments:
        runs = client.search_runs([experiment.experiment_id], SEQUENCE_FILTER, order_by=["attributes.start_time DESC"], max_results=1000)
        chosen = {}
        for method in methods:
            matching = [r for r in runs if set(r.data.params.get("methods", "").split(",")) == {method}]
            matching.sort(key=lambda r: r.info.status != "FINISHED")  # stable: newest finished first
            if matching:
                chosen[method] = matching[0]
        if len(chosen) == len(methods):
            return experiment.experiment_id, chosen
    raise CheckFailed(f"{store}: no experiment has a sequence parent run for each of {', '.join(methods)} (run `make reproduce-sequential`, or `harness sync`)")


def format_metric(value: float) -> str:
    """MLflow UI's Utils.formatMetric: 3 decimals below 10 (as JavaScript prints numbers)."""
    if value == 0:
        return "0"
    if abs(value) < 0.001:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    scale = 1000 if abs(value) < 10 else 100 if abs(value) < 100 else 10
    text = repr(math.floor(value * scale + 0.5) / scale)  # JavaScript's Math.round: halves go up, not to even
    return text[:-2] if text.endswith(".0") else text


def shown_forms(value: float) -> set[str]:
    """How the UI may print a metric: rounded by formatMetric, or in full (JS and Python agree on shortest round-trip digits)."""
    full = repr(value)
    return {format_metric(value), full[:-2] if full.endswith(".0") else full}


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: str, log_path: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # Its own process group, so stopping it also stops the uvicorn and job-runner children it spawns.
    # No background job runners (GenAI features): fewer processes and a faster start on a shared machine.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CheckFailed(f"mlflow ui exited with code {server.returncode}:\n{log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise CheckFailed(f"mlflow ui did not answer on {url} within {timeout:.0f} s:\n{log_path.read_text(errors='replace')[-2000:]}")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
            server.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


# ---------------------------------------------------------------- the browser


def open_browser(chromium: str, chromedriver: str, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, package in ((chromium, "chromium"), (chromedriver, "chromium-driver")):
        if not Path(path).exists():
            raise CheckFailed(f"{path} not found: apt-get install -y {package}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path keeps Selenium Manager from trying to download one.
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, needles: list[str], timeout: float, page: str) -> None:
    """The UI renders after load (React, data fetched on the fly): poll until every needle is on screen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = body_text(driver)
        if all(n in text for n in needles):
            return
        time.sleep(0.5)
    missing = [n for n in needles if n not in body_text(driver)]
    raise CheckFailed(f"{page}: not on the page after {timeout:.0f} s: {', '.join(missing)}")


def close_assistant(driver) -> None:
    """The MLflow Assistant side panel opens on a fresh profile and covers a third of the screenshot."""
    from selenium.webdriver.common.by import By

    panels = driver.find_elements(By.XPATH, "//*[text()='MLflow Assistant']/ancestor::div[.//button[@aria-label='Close']][1]//button[@aria-label='Close']")
    if panels:
        panels[0].click()
        time.sleep(0.5)


def metric_cells(driver) -> dict[str, list[str]]:
    """The compare view's Metrics table: one grid of keys, then one of values in key-major, run-minor order."""
    from selenium.webdriver.common.by import By

    section = "//button[@aria-label='Metrics - Show diff only']/following::div[@role='grid']"
    keys = [e.text.strip() for e in driver.find_elements(By.XPATH, f"({section})[1]//div[@role='rowgroup']/div")]
    values = [e.text.strip() for e in driver.find_elements(By.XPATH, f"({section})[2]//div[@role='rowgroup']/div")]
    if not keys or len(values) % len(keys):
        raise CheckFailed(f"compare view: could not read the Metrics table ({len(keys)} keys, {len(values)} values)")
    per_key = len(values) // len(keys)
    return {key: values[i * per_key : (i + 1) * per_key] for i, key in enumerate(keys)}


def check_experiment_page(driver, url: str, experiment_id: str, runs: dict, timeout: float, screenshot: Path) -> None:
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "compareRunsMode": "CHART", "searchFilter": SEQUENCE_FILTER})
    driver.get(f"{url}#/experiments/{experiment_id}/runs?{query}")
    names = [r.info.run_name for r in runs.values()]
    wait_for_text(driver, names + ["matching runs"], timeout, "experiment page")
    close_assistant(driver)
    # The chart view draws one chart per metric, in sections, lazily: narrow it to the checked ones (the box takes a regex).
    from selenium.webdriver.common.by import By

    boxes = driver.find_elements(By.XPATH, "//input[@placeholder='Search metric charts']")
    if boxes:
        boxes[0].send_keys(f"^({'|'.join(METRICS)})$")
    wait_for_text(driver, [f"\n{m}\n" for m in METRICS] + [f"{r.info.run_name} ({m})" for r in runs.values() for m in METRICS], timeout, "experiment page charts")
    # Plotly's tool bars sit over the top of each chart and hide the highest points.
    driver.execute_script("const s = document.createElement('style'); s.textContent = '.modebar-container {display: none !important}'; document.head.append(s)")
    time.sleep(1)  # let the charts finish drawing before the picture
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))


def check_compare_page(driver, url: str, experiment_id: str, runs: dict, timeout: float, screenshot: Path) -> None:
    ids = [r.info.run_id for r in runs.values()]
    query = f"runs={json.dumps(ids)}&experiments={json.dumps([experiment_id])}&workflowType=machine_learning"  # as MLflow's own compare link builds it
    driver.get(f"{url}#/compare-runs?{query}")
    wait_for_text(driver, [f"Comparing {len(ids)} Runs", *(r.info.run_name for r in runs.values()), "Metrics"], timeout, "compare view")
    close_assistant(driver)
    cells = metric_cells(driver)
    problems = []
    for key in METRICS:
        shown = cells.get(key)
        if shown is None:
            problems.append(f"metric {key} missing (shown: {', '.join(cells)})")
            continue
        for (method, run), text in zip(runs.items(), shown):  # columns follow the runs= order
            expected = run.data.metrics.get(key)
            if expected is None or text not in shown_forms(expected):
                problems.append(f"{method} {key}: page shows {text!r}, store has {expected!r}")
    if problems:
        driver.save_screenshot(str(screenshot))
        raise CheckFailed("compare view: " + "; ".join(problems))
    driver.set_window_size(1600, 2000)  # tall enough for the plot, run details, parameters and metrics in one picture
    time.sleep(1)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = args.methods.replace(",", " ").split()  # "sft,sdft,sdpo" or the Makefile's "sft sdft sdpo"
    started = time.monotonic()
    if args.store.startswith("sqlite:///") and not Path(args.store.removeprefix("sqlite:///")).exists():
        print(f"ui-check: no store at {args.store} (mlflow would create an empty one)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ui-check-"))
    server = driver = None
    try:
        experiment_id, runs = pick_runs(args.store, methods, args.experiment)
        print(f"ui-check: experiment {experiment_id}, runs " + ", ".join(f"{m}={r.info.run_name} ({r.info.run_id[:8]})" for m, r in runs.items()))
        server, url = start_server(args.store, work / "mlflow-ui.log", args.timeout)
        driver = open_browser(args.chromium, args.chromedriver, str(work / "profile"))
        check_experiment_page(driver, url, experiment_id, runs, args.timeout, Path(args.experiment_screenshot))
        print(f"ui-check: experiment page shows the {len(runs)} runs and their {', '.join(METRICS)} charts -> {args.experiment_screenshot}")
        check_compare_page(driver, url, experiment_id, runs, args.timeout, Path(args.screenshot))
        print(f"ui-check: compare view shows {', '.join(METRICS)} of each run as in the store -> {args.screenshot}")
    except CheckFailed as e:
        print(f"ui-check: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    print(f"ui-check: passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
