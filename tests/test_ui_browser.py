"""The MLflow UI as a person uses it, in headless Chromium (Debian's `chromium`, driven by Playwright).

A real tiny sweep (two dropout rates) goes into a store under the test's folder; `mlflow ui` serves it
on a free loopback port. The test opens the home page, switches to "Model training", opens the
experiment, expands the sweep's parent run, adds the test_acc and gap columns, checks the values shown
against the store, selects two child runs and opens the compare view. Screenshots go to the test's
tmp_path. Without Chromium or Playwright the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import mlflow_runs, run_cli, tiny_overrides
from helpers.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
UI_START_TIMEOUT = 180  # mlflow ui imports a lot; on a busy 2-core machine this takes 20-60 s
TIMEOUT_MS = 60_000


def _missing(what: str):
    """CI must run this test for real: a missing browser there is a failure, elsewhere a skip."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{what} (CI=true: the browser test must run; .ci/run installs chromium)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def sweep(tiny_root, tmp_path_factory):
    """A real multirun: one parent run and two child runs with per-epoch metrics."""
    out = tmp_path_factory.mktemp("ui_store")
    res = run_cli(["-m", *tiny_overrides(tiny_root, out, epochs=2), "drop_prob=0,0.5", "seed=1"])
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(out)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id), key=lambda r: r.info.run_name
    )
    assert [r.info.run_name for r in children] == ["p=0.00 in=0.00 seed=1", "p=0.50 in=0.00 seed=1"]
    return {"out": out, "experiment_id": parent.info.experiment_id, "parent": parent, "children": children}


@pytest.fixture(scope="module")
def mlflow_ui(sweep):
    """`mlflow ui` on the sweep's store, bound to 127.0.0.1 on a free port; stopped (its whole process
    group) when the module's tests are done."""
    port = free_port()
    log_path = sweep["out"] / "mlflow_ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                f"sqlite:///{sweep['out']}/mlflow.db",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=sweep["out"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + UI_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow ui exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(
                    f"mlflow ui did not answer {url}/health in {UI_START_TIMEOUT}s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/chromium)")
    with sync_playwright() as p:
        # Playwright gives every launch a new, empty user-data-dir; no browser download is involved
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    context.close()


def _row(page, run_id: str, part: str = "pinned-left"):
    """The runs table's row for a run (ag-grid keys rows by run id): `pinned-left` holds the checkbox
    and the run name, `center` the other columns."""
    return page.locator(f'.ag-{part}-cols-container .ag-row[row-id="{run_id}"]')


def _in_view(page, locator, container: str) -> bool:
    """Drawn inside the visible part of `container` (is_visible() alone passes clipped cells too)."""
    box, frame = locator.bounding_box(), page.locator(container).first.bounding_box()
    return bool(
        box
        and frame
        and box["width"] > 0
        and frame["x"] <= box["x"]
        and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        and frame["y"] <= box["y"]
        and box["y"] + box["height"] <= frame["y"] + frame["height"] + 1
    )


def _close_assistant(page) -> None:
    """The MLflow Assistant side panel (MLflow >= 3.x) takes a third of the width; a person closes it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        close.wait_for(timeout=10_000)
    except PlaywrightTimeout:
        return  # an MLflow without the panel
    close.click()
    close.wait_for(state="hidden")


def _open_runs_table(page, url: str, sweep) -> None:
    """Home page -> "Model training" -> the experiment -> the sweep's parent expanded to its child runs."""
    page.goto(url + "/")
    experiment_link = page.get_by_role("link", name="dropout", exact=True).first
    experiment_link.wait_for()
    toggle = page.get_by_text("Model training", exact=True)
    if toggle.count():  # MLflow 3 opens experiments in its GenAI view until the user picks "Model training"
        toggle.first.click()
    experiment_link.click()
    page.wait_for_url(f"**/experiments/{sweep['experiment_id']}/runs**")
    _close_assistant(page)
    parent = _row(page, sweep["parent"].info.run_id)
    parent.wait_for()
    assert parent.get_by_text(sweep["parent"].info.run_name, exact=True).is_visible()
    for child in sweep["children"]:  # nested under the parent, hidden until it is expanded
        assert _row(page, child.info.run_id).count() == 0
    parent.locator("button").first.click()  # the expand (+) button in the run-name cell
    for child in sweep["children"]:
        row = _row(page, child.info.run_id)
        row.wait_for()
        assert row.get_by_text(child.info.run_name, exact=True).is_visible()


def test_runs_table_shows_the_sweeps_child_runs_with_test_acc_and_gap(page, mlflow_ui, sweep, tmp_path):
    _open_runs_table(page, mlflow_ui, sweep)
    page.get_by_role("button", name="Columns").click()
    for metric in ("test_acc", "gap"):
        node = page.locator(".du-bois-light-tree-treenode", has=page.locator(f'span[title="{metric}"]'))
        node.locator(".du-bois-light-tree-checkbox").click()
        page.locator(f'.ag-header-cell[col-id="metrics.`{metric}`"]').wait_for()
    page.keyboard.press("Escape")
    page.locator('.ag-header-cell[col-id="metrics.`test_acc`"]').scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # ag-grid redraws the rows after a horizontal scroll
    page.screenshot(path=str(tmp_path / "runs_table.png"))
    for metric in ("test_acc", "gap"):
        header = page.locator(f'.ag-header-cell[col-id="metrics.`{metric}`"]')
        assert _in_view(page, header, ".ag-root-wrapper") and header.inner_text().strip() == metric
        for child in sweep["children"]:
            cell = _row(page, child.info.run_id, "center").locator(f'[col-id="metrics.`{metric}`"]')
            assert _in_view(page, cell, ".ag-root-wrapper"), (metric, child.info.run_name)
            assert float(cell.inner_text()) == pytest.approx(child.data.metrics[metric], abs=1e-3), (
                metric,
                child.info.run_name,
            )
    print(f"screenshot: {tmp_path / 'runs_table.png'}")


def test_compare_view_of_two_child_runs_shows_their_params_and_metrics(page, mlflow_ui, sweep, tmp_path):
    _open_runs_table(page, mlflow_ui, sweep)
    for child in sweep["children"]:
        _row(page, child.info.run_id).locator("input[type=checkbox]").first.check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url("**/compare-runs?runs=**")
    page.get_by_text("Comparing 2 Runs").wait_for()
    for child in sweep["children"]:
        assert child.info.run_id in page.url
        assert page.get_by_text(child.info.run_name, exact=True).first.is_visible()
    # metric rows link to their per-epoch chart. A run logs dozens of metrics now (at_best_val.*, calibration,
    # lr...) and the compare view renders only its first rows until scrolled; the two the README tells users
    # to compare are among them
    for metric in ("test_acc", "gap"):
        assert page.locator(f'a[title="Plot chart"][href*="metric=%22{metric}%22"]').first.is_visible(), metric
    row = page.locator("tr", has=page.get_by_text("drop_prob", exact=True)).first
    assert row.is_visible() and "0.0" in row.inner_text() and "0.5" in row.inner_text()
    page.screenshot(path=str(tmp_path / "compare_runs.png"))
    page.locator('a[title="Plot chart"][href*="metric=%22test_acc%22"]').first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "compare_runs_metrics.png"))
    print(f"screenshots: {tmp_path / 'compare_runs.png'}, {tmp_path / 'compare_runs_metrics.png'}")
