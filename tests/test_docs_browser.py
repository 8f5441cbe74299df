"""/docs and /redoc of real running stages, in a real headless Chromium that can reach nothing but the stage.

Debian's `chromium` (never a browser that Playwright downloads), driven by Playwright. Every request to
another host is refused, as it would fail offline: the pages must render every operation of the stage's
schema from what the stage itself serves, a call from /docs must work, and in the advanced lab the
Authorize button must log in (OAuth2 password flow) so that an authorised call from the page succeeds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Locator, Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.support.services import unavailable
from tests.support.stage import ROOT, StageProcess, run_stage

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAST = {"OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "5", "OFFLINE_LLM_TOKEN_DELAY_MS": "1", "RATE_LIMIT_REQUESTS": "1000"}
STAGES = {
    "medium": ROOT / "solutions" / "medium",
    "advanced": ROOT / "solutions" / "advanced",
    "medium_lab": ROOT / "medium_lab",
    "advanced_lab": ROOT / "advanced_lab",
}
WAIT_MS = 30_000  # generous: only a page that never renders takes this long


@dataclass
class Offline:
    """The browser's requests to anywhere but the stage: refused, and remembered as (resource type, URL)."""

    stage_url: str
    refused: list[tuple[str, str]] = field(default_factory=list)

    def route(self, route: Route) -> None:
        request = route.request
        if urlsplit(request.url).netloc == urlsplit(self.stage_url).netloc:
            route.continue_()
        else:
            self.refused.append((request.resource_type, request.url))
            route.abort()

    def scripts_styles_and_calls(self) -> list[tuple[str, str]]:
        """What was refused but a page needs; an image (ReDoc's Redocly logo) leaves the page usable."""
        return [(kind, url) for kind, url in self.refused if kind != "image"]


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a new empty profile, for the whole module."""
    chromium = shutil.which("chromium")  # Debian's /usr/bin/chromium
    if chromium is None:
        unavailable("chromium is not installed (Debian package chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], StageProcess]]:
    """Each stage as a real uvicorn process, started when a test first needs it and kept for the module (the
    advanced ones on a SQLite file of their own)."""
    with ExitStack() as stack:
        started: dict[str, StageProcess] = {}

        def stage(name: str) -> StageProcess:
            if name not in started:
                database = tmp_path_factory.mktemp(name) / "lab.db"
                env = {**FAST, "DATABASE_URL": f"sqlite+aiosqlite:///{database}", "BCRYPT_ROUNDS": "4"}
                process = run_stage(STAGES[name], env if "advanced" in name else FAST, timeout=60)
                started[name] = stack.enter_context(process)
            return started[name]

        yield stage


def _operations(stage: StageProcess) -> dict[tuple[str, str], str]:
    """Every operation of the stage's own OpenAPI schema: (METHOD, path) -> operationId."""
    paths = httpx.get(f"{stage.url}/openapi.json", timeout=10).json()["paths"]
    return {(method.upper(), path): op["operationId"] for path, item in paths.items() for method, op in item.items()}


def _open(browser: BrowserContext, stage: StageProcess) -> tuple[Page, Offline]:
    offline = Offline(stage.url)
    page = browser.new_page()
    page.route("**/*", offline.route)
    return page, offline


def _wait_rendered(page: Page, selector: str, offline: Offline) -> None:
    """Wait for the first element the page's scripts render; if none comes, say what the page could not load."""
    try:
        page.locator(selector).first.wait_for()
    except PlaywrightTimeoutError:
        pytest.fail(f"{page.url} rendered no {selector} in {WAIT_MS / 1000:g} s; refused: {offline.refused}")


def _assert_not_blank(page: Page, screenshot: Path) -> None:
    """The page, as pixels, is more than one flat colour (a page whose scripts did not load is white)."""
    page.screenshot(path=screenshot)
    colours = Image.open(screenshot).convert("RGB").getcolors(maxcolors=64)
    assert colours is None or len(colours) > 8, f"{screenshot.name} is nearly blank: {len(colours)} colours"


def _swagger_operation(page: Page, method: str, path: str) -> Locator:
    summary = page.locator(f".opblock-summary-path[data-path='{path}']")
    return page.locator(f".opblock-{method.lower()}").filter(has=summary)


def _execute(operation: Locator) -> tuple[str, str]:
    """Try it out and Execute an operation without parameters; return the live response's status and body."""
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    live = operation.locator(".live-responses-table tbody tr.response")
    live.locator(".response-col_status").wait_for()
    return live.locator(".response-col_status").inner_text().strip(), live.locator(".microlight").first.inner_text()


def _authorize(page: Page, username: str, password: str) -> None:
    """Log in through the Authorize button's OAuth2 password form; wait until it says Authorized."""
    page.locator(".auth-wrapper button.authorize").click()
    modal = page.locator(".modal-ux")
    modal.locator("#oauth_username").fill(username)
    modal.locator("#oauth_password").fill(password)
    modal.locator(".auth-btn-wrapper button.authorize").click()
    modal.locator("h6", has_text="Authorized").wait_for()
    modal.locator("button.btn-done").click()


@pytest.mark.service
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(STAGES))
def test_docs_render_every_operation_offline_and_call_the_api(
    browser: BrowserContext, running: Callable[[str], StageProcess], name: str, tmp_path: Path
) -> None:
    """/docs shows every operation of the schema and GET /health tried from the page answers 200; nothing
    but the stage is reached."""
    stage = running(name)
    operations = _operations(stage)
    page, offline = _open(browser, stage)
    page.goto(f"{stage.url}/docs")
    _wait_rendered(page, ".opblock", offline)
    rendered = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path") or "",
        )
        for block in page.locator(".opblock").all()
    }
    assert rendered == set(operations)
    _assert_not_blank(page, tmp_path / "docs.png")
    status, body = _execute(_swagger_operation(page, "GET", "/health"))
    assert status == "200", body
    assert '"status"' in body
    assert offline.scripts_styles_and_calls() == []
    page.close()


@pytest.mark.service
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(STAGES))
def test_redoc_renders_every_operation_offline(
    browser: BrowserContext, running: Callable[[str], StageProcess], name: str, tmp_path: Path
) -> None:
    """/redoc shows a section for every operation of the schema; nothing but the stage is reached."""
    stage = running(name)
    operations = _operations(stage)
    page, offline = _open(browser, stage)
    page.goto(f"{stage.url}/redoc")
    _wait_rendered(page, "[data-section-id^='operation/']", offline)
    sections = page.locator("[data-section-id^='operation/']").all()
    rendered = {section.get_attribute("data-section-id") for section in sections}
    assert rendered == {f"operation/{operation_id}" for operation_id in operations.values()}
    _assert_not_blank(page, tmp_path / "redoc.png")
    assert offline.scripts_styles_and_calls() == []
    page.close()


@pytest.mark.service
@pytest.mark.timeout(180)
def test_authorize_logs_in_and_an_authorised_call_from_docs_succeeds(
    browser: BrowserContext, running: Callable[[str], StageProcess], tmp_path: Path
) -> None:
    """In the advanced lab, Authorize logs in as demo (OAuth2 password flow against /api/v1/auth/login), and
    GET /api/v1/auth/me from the page then answers 200 for demo; before, it answers 401."""
    stage = running("advanced")
    page, offline = _open(browser, stage)
    page.goto(f"{stage.url}/docs")
    me = _swagger_operation(page, "GET", "/api/v1/auth/me")
    status, _ = _execute(me)
    assert status == "401"
    _authorize(page, "demo", "demo-password")
    me.locator("button.execute").click()
    live = me.locator(".live-responses-table tbody tr.response")
    live.locator(".response-col_status", has_text="200").wait_for()
    assert '"username": "demo"' in live.locator(".microlight").first.inner_text()
    _assert_not_blank(page, tmp_path / "docs-authorized.png")
    assert offline.scripts_styles_and_calls() == []
    page.close()
