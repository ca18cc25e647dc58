"""The web UI in a real browser: Playwright driving Debian's Chromium (scripts/lib/browser.sh)
against a real `liminal serve` with a synced repository. Screenshots of each page are saved in
test-artifacts/screenshots/ (not committed)."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from controller.ledger import Ledger
from controller.model import RepoRef
from tests.conftest import REPO, cli_env, commit_all, example_remote, git, liminal, need, running_controller
from tests.test_serve import API_TOKEN, SECRET, _examples, _github

SHOTS = REPO / "test-artifacts" / "screenshots"
LIVE = 30_000  # ms: a commit is polled (1 s), synced and shown by the page's refresh (3 s)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=need("LIMINAL_TEST_CHROMIUM"), args=["--no-sandbox"])
        yield found
        found.close()


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_ui_shows_the_real_state_live_and_guards_its_actions(tmp_path: Path, browser: Browser) -> None:
    work = example_remote(tmp_path)
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    ledger = Ledger(f"sqlite:///{tmp_path / 'home' / 'ledger.db'}")
    ledger.add_repo(RepoRef("hello", str(origin)))
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_IMAGES="off",
        LIMINAL_API_TOKEN=API_TOKEN,
        LIMINAL_GITHUB_WEBHOOK_SECRET=SECRET,
        LIMINAL_POLL_INTERVAL="1",
    )
    first = liminal("sync", "hello", env=env)
    assert first.returncode == 0, first.stderr
    live = ledger.status("hello").last_applied_commit
    assert live
    outside: list[str] = []
    with running_controller(env, tmp_path / "serve.log") as (url, _):
        page = browser.new_page()
        # nothing is fetched from anywhere but the controller (no CDN)
        page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))

        page.goto(f"{url}/")
        row = page.get_by_role("row", name=re.compile("hello"))
        expect(row).to_contain_text("synced")
        expect(row).to_contain_text(live[:12])
        _shot(page, "repositories")

        page.get_by_role("link", name="hello").click()
        expect(page.get_by_role("heading", name="hello", level=1)).to_be_visible()
        resources = page.get_by_role("table", name="What is deployed, and from which commit")
        expect(resources).to_contain_text("hello_training")
        expect(resources).to_contain_text(live[:12])
        expect(page.locator("details.run").first).to_contain_text("succeeded")
        _shot(page, "repository")

        # a new commit shows without a reload
        yml = work / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 7 * * *"))
        pushed = commit_all(work, "a later schedule")
        git(work, "push", "-q", "origin", "main")
        expect(resources).to_contain_text(pushed[:12], timeout=LIVE)

        # Sync: refused without the token, queued with it; the token never goes into a URL
        sync = page.locator("form[data-action=sync]")
        sync.get_by_role("button", name="Sync now").click()
        expect(page.locator("#action-result")).to_contain_text("401")
        page.get_by_label("API token").fill(API_TOKEN)
        sync.get_by_role("button", name="Sync now").click()
        expect(page.locator("#action-result")).to_contain_text("Sync queued")
        assert API_TOKEN not in page.url

        # Rollback: a revert commit is pushed and deployed; the page shows it
        page.locator("form[data-action=rollback]").get_by_role("button", name="Roll back").click()
        expect(page.locator("#action-result")).to_contain_text("Rolled back with commit", timeout=LIVE)
        reverted = git(origin, "rev-parse", "main")
        assert reverted != pushed
        expect(resources).to_contain_text(reverted[:12], timeout=LIVE)
        _shot(page, "repository-after-rollback")

        # the plan page: the preview the CLI prints
        page.goto(f"{url}/repos/hello/plan")
        page.get_by_role("button", name="Show the plan").click()  # the token is remembered by this tab
        expect(page.locator("#plan")).to_contain_text("Nothing to change", timeout=LIVE)
        _shot(page, "plan")

        # a pull request's check page (what the commit status links to)
        git(work, "checkout", "-q", "-b", "feature")
        yml.write_text(yml.read_text().replace("timeout_minutes: 30", "timeout_minutes: thirty"))
        head = commit_all(work, "a typo")
        git(work, "push", "-q", "origin", f"{head}:refs/pull/7/head")
        payload = copy.deepcopy(next(p for p in _examples("pull_request") if p["action"] == "opened"))
        payload["number"] = 7
        payload["pull_request"].update(number=7)
        payload["pull_request"]["head"].update(sha=head, ref="feature")
        payload["pull_request"]["base"].update(ref="main")
        payload["repository"].update(clone_url=str(origin), ssh_url=str(origin), git_url=str(origin))
        delivery = f"pr-{uuid.uuid4().hex[:8]}"
        assert _github(url, "pull_request", payload, delivery=delivery)[0] == 202
        page.goto(f"{url}/checks/github/{delivery}")
        for _ in range(60):
            if "problem(s)" in page.locator("main").inner_text():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(page.locator("main")).to_contain_text("liminal.yml:")
        expect(page.locator("main")).to_contain_text("timeout_minutes")
        _shot(page, "check")

        # /docs works offline; the API reference renders
        page.goto(f"{url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Liminal GitOps controller", timeout=LIVE)

        # a phone screen: nothing wider than the screen
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{url}/repos/hello")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        _shot(phone, "repository-phone")
        # every field has a label; the keyboard reaches the actions
        assert phone.evaluate("[...document.querySelectorAll('input')].every(i => i.labels.length > 0)")
        phone.keyboard.press("Tab")
        phone.keyboard.press("Tab")
        assert phone.evaluate("document.activeElement.tagName") in ("A", "INPUT", "BUTTON")
        phone.close()
        page.close()
    assert outside == []
    ledger.close()


def test_with_api_reads_token_the_ui_and_the_api_need_the_token_and_a_browser_signs_in(
    tmp_path: Path, browser: Browser
) -> None:
    work = example_remote(tmp_path)
    ledger = Ledger(f"sqlite:///{tmp_path / 'home' / 'ledger.db'}")
    ledger.add_repo(RepoRef("hello", str(work)))
    env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off", LIMINAL_API_TOKEN=API_TOKEN, LIMINAL_API_READS="token")
    assert liminal("sync", "hello", env=env).returncode == 0
    with running_controller(env, tmp_path / "serve.log") as (url, _):
        for path in ("/api/v1/repositories", "/api/v1/runs", "/openapi.json"):
            assert _status(f"{url}{path}") == 401, path
            assert _status(f"{url}{path}", {"Authorization": f"Bearer {API_TOKEN}"}) == 200, path
        assert _status(f"{url}/healthz") == 200 and _status(f"{url}/metrics") == 200  # probes stay open
        page = browser.new_page()
        page.goto(f"{url}/repos/hello")
        expect(page.get_by_role("heading", name="Sign in to read")).to_be_visible()
        assert "hello_training" not in page.content()
        page.get_by_label("API token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not the API token")
        page.get_by_label("API token").fill(API_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="hello", level=1)).to_be_visible()  # back where it was going
        expect(page.locator("main")).to_contain_text("hello_training")
        cookie = next(c for c in page.context.cookies() if c["name"] == "liminal_read")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and API_TOKEN not in cookie["value"]
        # the reading session never writes: Sync without the token in the page is refused
        page.locator("form[data-action=sync]").get_by_role("button", name="Sync now").click()
        expect(page.locator("#action-result")).to_contain_text("401")
        page.close()
    ledger.close()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
