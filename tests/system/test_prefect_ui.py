"""The Prefect UI in headless Chromium: find a deployment, start a custom run from the form, watch it
finish, keep screenshots under test-artifacts/.

Needs Debian's `chromium` (apt-get install -y chromium chromium-driver) and the `playwright` package;
the test drives /usr/bin/chromium, no browser download.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.builds import session_embedding_cache
from tests.fixtures.prefect_server import (
    REPO,
    PrefectServer,
    flow_run_logs,
    wait_for_final_state,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SMALL_BUILD = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}  # parity on 1-2 held-out articles is noise

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium chromium-driver)"),
]


@pytest.fixture()
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


BUSY = (429, 502, 503)


def _submit_like_a_user(page, attempts: int = 5) -> dict:
    """Submit the form; on a busy answer (SQLite write lock: 503) the form stays open, so submit again.

    Prefect's Python client retries these answers by itself; its UI shows an error toast and leaves the
    retry to the person. The toasts stack over the Submit button (and keep moving), so the retry presses
    it from the keyboard.
    """
    submit = page.get_by_role("button", name="Submit", exact=True)
    status = None
    for attempt in range(attempts):
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run")) as info:
            if attempt == 0:
                submit.click()
            else:
                submit.focus()
                page.keyboard.press("Enter")
        status = info.value.status
        if status not in BUSY:
            break
        page.wait_for_timeout(1000 * 2**attempt)
    assert status == 201, f"create_flow_run answered {status} after {attempt + 1} submit(s)"
    return info.value.json()


def test_custom_run_from_the_ui(deployed_server: PrefectServer, page, small_dataset: Path) -> None:
    server = deployed_server
    data_dir = server.root / "lvm-data"
    if (cache := session_embedding_cache()) is not None and not (data_dir / "cache").exists():
        shutil.copytree(cache, data_dir / "cache")  # the small build's vectors of these articles: no cold encode
    params = {
        "source": "sample",
        "data_dir": str(data_dir),
        "limit_articles": 14,
        "options": {"thresholds": SMALL_BUILD},
    }

    page.goto(f"{server.ui_url}/deployments", wait_until="networkidle")
    page.get_by_role("link", name="build-dataset", exact=True).first.click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+"))
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+/run"))

    # Parameters as JSON (the form's own "Use JSON input" mode), then submit.
    page.locator(".flow-run-create-form-v2__header button").click()
    page.get_by_text("Use JSON input", exact=True).click()
    editor = page.locator("textarea.p-code-input__textarea")
    editor.fill(json.dumps(params, indent=2))
    page.screenshot(path=str(ARTIFACTS / "prefect-ui-custom-run.png"), full_page=True)
    created = _submit_like_a_user(page)
    flow_run_id, run_name = created["id"], created["name"]
    assert created["parameters"] == params, "the UI should submit exactly the typed parameters"

    # Back on the deployment page the new run gets listed (the list refreshes on the UI's own schedule,
    # so reload until it shows); open it from there, or by its URL if the list is slow to show it.
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+(\?.*)?$"))
    link = page.get_by_role("link", name=run_name, exact=True).first
    deadline = time.monotonic() + 90
    while not link.is_visible() and time.monotonic() < deadline:
        page.wait_for_timeout(3000)
        if not link.is_visible():
            page.reload(wait_until="networkidle")
    if link.is_visible():
        link.click()
    else:
        page.goto(f"{server.ui_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
    page.wait_for_url(re.compile(rf"/runs/flow-run/{flow_run_id}"))

    final = wait_for_final_state(server, flow_run_id, timeout=1200)
    assert final["state"]["type"] == "COMPLETED", (
        f"{final['state']['name']}: {final['state'].get('message')}\n{flow_run_logs(server, flow_run_id)[-6000:]}"
    )

    # The UI shows the finished run (state badge) — poll: it refreshes on its own schedule.
    deadline = time.monotonic() + 60
    while True:
        page.goto(f"{server.ui_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
        if page.get_by_text("Completed", exact=True).first.is_visible():
            break
        if time.monotonic() > deadline:
            raise AssertionError("flow run page never showed Completed")
        time.sleep(3)
    page.screenshot(path=str(ARTIFACTS / "prefect-ui-flow-run.png"), full_page=True)

    page.goto(f"{server.ui_url}/deployments", wait_until="networkidle")
    page.get_by_text("lvm-pipeline", exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "prefect-ui-deployments.png"), full_page=True)
    for name in ("prefect-ui-custom-run.png", "prefect-ui-flow-run.png", "prefect-ui-deployments.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
    assert list((data_dir / "datasets").glob("*/READY"))
