"""
The job browser and the dashboard in a real browser: Chromium driven by
Playwright against a live server, with a real worker running the jobs.

Its screenshots go to a temporary folder, or to SCREENSHOTS_DIR when set:
scripts/screenshots.sh sets it to docs/screenshots/ to refresh the docs' own.
Without Chromium the test is skipped, unless REQUIRE_BROWSER_TESTS is set (as
.ci/run does, which installs it): then it fails, so a browser test cannot
quietly stop running.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

from accounts.tasks import record_welcome_outcome
from jobs.models import JobStatus, Schedule
from tests import tasks
from tests.conftest import job_status, wait_for_status

CHROMIUM = Path("/usr/bin/chromium")

DASHBOARD = "/admin/jobs/job/dashboard/"

# Counts the page's fetches in the page itself, at the moment each is asked
# for: read back right after a timer fires, with nothing to wait for.
COUNT_FETCHES = """
window.jobsFetches = 0;
const fetchOfThePage = window.fetch;
window.fetch = (...args) => { window.jobsFetches += 1; return fetchOfThePage(...args); };
"""

# A common laptop screen: the job list and a job's page are made to fit it.
LAPTOP = {"width": 1366, "height": 768}
WIDE = {"width": 1680, "height": 900}


@pytest.fixture
def page(monkeypatch, live_server) -> Iterator:
    """A logged-out Chromium page on a wide screen."""
    if not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER_TESTS"):
            pytest.fail(f"{missing}, and REQUIRE_BROWSER_TESTS is set")
        pytest.skip(missing)
    from playwright import sync_api

    # Playwright's synchronous API runs an event loop in this thread, which
    # Django's ORM takes for an async context; the test's own queries are
    # plain synchronous code, so they are allowed explicitly.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        context = browser.new_context(viewport=WIDE)
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


@pytest.fixture
def csp_violations(page) -> list[str]:
    """What the browser refused under the site's Content-Security-Policy, as its console says."""
    refused: list[str] = []

    def note(message) -> None:
        if "Content Security Policy" in message.text:
            refused.append(f"{page.url}: {message.text}")

    page.on("console", note)
    return refused


@pytest.fixture
def screenshot(tmp_path) -> Callable[..., None]:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = False) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)

    return take


def sign_in(page, live_server) -> None:
    User.objects.create_superuser("admin", "admin@example.com", "correct horse")
    # Else still open when the test database is dropped, in a test without
    # start_worker (whose teardown closes it).
    connection.close()
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def set_visibility(page, state: str) -> None:
    """The tab hidden or shown, as the browser tells a page when its tab is switched."""
    page.evaluate(
        """state => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def assert_job_list_fits(page) -> None:
    """
    The job list as a person sees it on a laptop, the admin's nav sidebar
    open (its default): every column inside the results' own scroll box and
    inside the screen, a job's id on one line, and the filter's task paths
    broken after a dot, never inside a name.
    """
    box = page.evaluate(
        """() => {
            const results = document.querySelector("#changelist .results");
            return {scrollWidth: results.scrollWidth, clientWidth: results.clientWidth};
        }"""
    )
    assert box["scrollWidth"] <= box["clientWidth"], (
        f"the job list is {box['scrollWidth']} px wide in a {box['clientWidth']} px box"
    )
    headers = page.locator("#result_list thead th")
    for index in range(headers.count()):
        header = headers.nth(index).bounding_box()
        assert 0 <= header["x"] and header["x"] + header["width"] <= LAPTOP["width"], (
            f"column {headers.nth(index).inner_text()!r} is off the screen: {header}"
        )
    id_lines = page.evaluate(
        """Array.from(document.querySelectorAll("#result_list .field-short_id span"),
            id => id.getClientRects().length)"""
    )
    assert id_lines and set(id_lines) == {1}, f"ids over {id_lines} lines"
    name_lines = page.evaluate(
        """Array.from(document.querySelectorAll("#changelist-filter a[href*='task=']"),
            link => Array.from(link.childNodes).filter(node => node.nodeType === Node.TEXT_NODE)
                .map(text => { const range = document.createRange();
                    range.selectNodeContents(text); return range.getClientRects().length; }))
            .flat()"""
    )
    assert name_lines and set(name_lines) == {1}, f"a task path broken inside a name: {name_lines}"


def assert_overview_on_first_screen(page) -> None:
    """A failed job's status, task, attempts and error, on a laptop's screen without scrolling."""
    for name, selector in (
        ("status", ".fieldBox.field-status_label .readonly"),
        ("task", ".fieldBox.field-task_link .readonly"),
        ("attempts", ".fieldBox.field-attempts_label .readonly"),
        ("last error", ".field-last_error .jobs-last-error"),
    ):
        box = page.locator(selector).bounding_box()
        assert box is not None, f"no {name} on the page"
        assert box["y"] + box["height"] < LAPTOP["height"], f"the {name} is below the fold: {box}"
        assert box["x"] + box["width"] <= LAPTOP["width"], f"the {name} is off the screen: {box}"


def test_operator_finds_a_failure_retries_it_cancels_a_job_and_reads_the_dashboard(
    page, live_server, start_worker, screenshot, csp_violations, request
):
    from playwright.sync_api import expect

    # A job that fails for real: the table it writes to does not exist yet.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS test_ledger")
    broken = tasks.record_run.using(max_attempts=1).enqueue("browser")
    done = [tasks.add.enqueue(n, n) for n in range(5)]
    done.append(tasks.add.using(tags=["browser"]).enqueue(5, 5))
    # A wide row: a long task path, a queue and a priority, long arguments.
    outcomes = [{"channel": channel, "status": "SUCCESSFUL"} for channel in ("email", "sms")]
    done.append(record_welcome_outcome.using(priority=5).enqueue(outcomes, user_id=1))
    worker = start_worker("--concurrency", "2")
    wait_for_status(broken.id, (JobStatus.FAILED,))
    for result in done:
        wait_for_status(result.id, (JobStatus.SUCCESSFUL,))
    request.getfixturevalue("ledger")  # now the table exists: a retry can succeed
    waiting = tasks.noop.using(countdown=3600).enqueue()
    Schedule.objects.create(name="signup-report", task_path="tests.tasks.noop", cron="0 18 * * 1-5")
    User.objects.create_superuser("admin", "admin@example.com", "correct horse")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.click("a[href='/admin/jobs/job/']")
    expect(page.locator("#result_list tbody tr")).to_have_count(9)
    page.set_viewport_size(LAPTOP)
    screenshot(page, "job-list")
    assert_job_list_fits(page)

    page.locator("#changelist-filter").get_by_role("link", name="browser", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("5, 5")
    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr th a").click()
    expect(page.locator(".jobs-last-error")).to_contain_text(
        'relation "test_ledger" does not exist'
    )
    expect(page.locator(".fieldBox.field-attempts_label")).to_contain_text("1/1")
    assert_overview_on_first_screen(page)
    expect(page.locator(".jobs-error pre")).to_contain_text("Traceback (most recent call last)")
    # A section with nothing in it is folded, and says so.
    expect(page.get_by_text("Keys, tags and meta (none)")).to_be_visible()
    expect(page.locator(".field-meta_json")).to_be_hidden()
    screenshot(page, "job-detail", full_page=True)
    page.set_viewport_size(WIDE)

    page.click("#job-retry")
    expect(page.locator(".messagelist")).to_contain_text("Retried")
    wait_for_status(broken.id, (JobStatus.SUCCESSFUL,))
    page.reload()
    expect(page.locator(".field-status_label .jobs-status")).to_have_text("SUCCESSFUL")
    expect(page.locator(".field-return_value_json pre")).to_have_text("2")

    page.goto(f"{live_server.url}/admin/jobs/job/?status__exact=READY")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.check(f"input[name=_selected_action][value='{waiting.id}']")
    page.select_option("select[name=action]", "cancel_jobs")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Cancelled: 1 job.")
    assert job_status(waiting.id) == JobStatus.CANCELLED

    page.goto(f"{live_server.url}/admin/")
    page.locator("#jobs-dashboard-link").get_by_role("link", name="Dashboard").click()
    expect(page.locator("svg.jobs-chart")).to_have_count(4)
    expect(page.locator("svg.jobs-chart rect.bar.successful").first).to_be_visible()
    expect(page.locator("svg.jobs-chart rect.bar.latency")).to_have_count(3)
    expect(page.locator("#jobs-workers tbody")).to_contain_text(str(worker.pid))
    expect(page.locator("#jobs-schedules")).to_contain_text("At 18:00, Monday through Friday")
    screenshot(page, "dashboard", full_page=True)
    # The charts' text as drawn on the screen, at 1366 px too.
    for width in (1680, 1366):
        page.set_viewport_size({"width": width, "height": 900})
        smallest = page.evaluate(
            """Math.min(...Array.from(document.querySelectorAll("svg.jobs-chart text"),
                text => text.getBoundingClientRect().height))"""
        )
        assert smallest >= 11, f"a chart label is {smallest:.1f} px high at {width} px"
    ticks = page.locator("svg.jobs-chart").first.locator("text")
    expect(ticks.filter(has_text=":")).not_to_have_count(0)

    page.click("#jobs-statistics-link")
    add_row = page.locator('#jobs-task-statistics tr[data-task="tests.tasks.add"]')
    expect(add_row.locator("td.runs")).to_have_text(["6", "6"])
    expect(add_row.locator("td.failed")).to_have_text(["0", "0"])

    # Cancelling a running job asks first.
    running = tasks.sleep_for.enqueue(60)
    wait_for_status(running.id, (JobStatus.RUNNING,))
    page.goto(f"{live_server.url}/admin/jobs/job/{running.id}/change/")
    page.click("#job-cancel")
    expect(page.locator("#content")).to_contain_text("is running now")
    assert job_status(running.id) == JobStatus.RUNNING
    page.click("#job-cancel-confirmed")
    expect(page.locator(".messagelist")).to_contain_text("Cancelled")
    assert job_status(running.id) == JobStatus.CANCELLED
    assert csp_violations == [], csp_violations


def test_the_dashboard_follows_a_worker_without_reloading(
    page, live_server, start_worker, csp_violations
):
    from playwright.sync_api import expect

    sign_in(page, live_server)
    page.goto(f"{live_server.url}{DASHBOARD}")
    status = page.locator("#jobs-live-status")
    running = page.locator(".jobs-summary li", has_text="Running").locator("strong")
    queue_row = page.locator("#jobs-queues tbody tr", has=page.locator("th", has_text="default"))
    due_now = queue_row.locator("td").first
    expect(status).to_contain_text("Live · updated")
    expect(running).to_have_text("0")
    expect(due_now).to_have_text("0")
    # Gone if the page were loaded again.
    page.evaluate("window.jobsSameDocument = true")

    for _ in range(3):
        tasks.sleep_for.enqueue(30)
    expect(due_now).to_have_text("3")
    worker = start_worker("--concurrency", "2")
    expect(running).not_to_have_text("0")
    expect(due_now).not_to_have_text("3")
    expect(page.locator("#jobs-workers tbody")).to_contain_text(str(worker.pid))
    expect(page.locator("svg.jobs-chart")).to_have_count(4)
    assert page.evaluate("window.jobsSameDocument") is True
    assert csp_violations == [], csp_violations


def test_a_hidden_dashboard_asks_for_nothing_and_catches_up_when_shown(
    page, live_server, csp_violations
):
    from playwright.sync_api import expect

    def fetches() -> int:
        return page.evaluate("window.jobsFetches")

    sign_in(page, live_server)
    # The page's timers run only when the test moves this clock.
    page.clock.install()
    page.add_init_script(COUNT_FETCHES)
    page.goto(f"{live_server.url}{DASHBOARD}")
    status = page.locator("#jobs-live-status")
    expect(status).to_contain_text("Live · updated")

    set_visibility(page, "hidden")
    expect(status).to_have_text("Paused while the tab is hidden")
    page.clock.run_for(60_000)
    assert fetches() == 0

    set_visibility(page, "visible")
    assert fetches() == 1
    expect(status).to_contain_text("Live · updated")
    with page.expect_response(lambda response: response.url.endswith("/dashboard/live/")):
        page.clock.run_for(2_000)
    assert fetches() == 2
    assert csp_violations == [], csp_violations


def test_the_job_list_follows_its_jobs_while_live_is_ticked(page, live_server, csp_violations):
    from playwright.sync_api import expect

    def fetches() -> int:
        return page.evaluate("window.jobsFetches")

    sign_in(page, live_server)
    page.clock.install()
    page.add_init_script(COUNT_FETCHES)
    page.goto(f"{live_server.url}/admin/jobs/job/")
    toggle = page.locator("#jobs-live-toggle")
    status = page.locator("#jobs-live-status")
    rows = page.locator("#result_list tbody tr")

    def row(job_id: str):
        return rows.filter(has=page.locator(f'input.action-select[value="{job_id}"]'))

    expect(toggle).not_to_be_checked()
    # Off by default: a list that changes under the reader's eyes is a choice.
    page.clock.run_for(10_000)
    assert fetches() == 0

    first = tasks.add.enqueue(1, 2)
    with page.expect_response(lambda response: "/admin/jobs/job/" in response.url):
        toggle.check()
    expect(status).to_contain_text("Live · updated")
    expect(row(first.id)).to_have_count(1)

    second = tasks.add.enqueue(3, 4)
    with page.expect_response(lambda response: "/admin/jobs/job/" in response.url):
        page.clock.run_for(2_000)
    expect(row(second.id)).to_have_count(1)
    page.evaluate("window.jobsSameDocument = true")

    # A ticked row holds the list still: its box must stay on its job.
    row(first.id).locator("input.action-select").check()
    expect(status).to_have_text("Paused while rows are selected")
    asked = fetches()
    tasks.add.enqueue(5, 6)
    page.clock.run_for(10_000)
    assert fetches() == asked
    expect(rows).to_have_count(2)
    assert page.evaluate("window.jobsSameDocument") is True

    # Remembered for the next list; unticked, it asks for nothing.
    page.reload()
    expect(toggle).to_be_checked()
    expect(rows).to_have_count(3)
    toggle.uncheck()
    asked = fetches()
    page.clock.run_for(10_000)
    assert fetches() == asked
    assert csp_violations == [], csp_violations


def test_a_workflows_page_follows_its_jobs_while_live_is_ticked(
    page, live_server, start_worker, csp_violations, screenshot
):
    from playwright.sync_api import expect

    from jobs.workflows import chain, step

    sign_in(page, live_server)
    result = chain(step(tasks.add, 1, 2), step(tasks.add, 3)).enqueue(name="two sums")
    page.goto(f"{live_server.url}/admin/jobs/job/workflows/{result.id}/")
    page.locator("#jobs-live-toggle").check()
    statuses = page.locator("#jobs-workflow-jobs tbody .jobs-status")
    expect(statuses).to_have_text(["READY", "WAITING"])
    page.evaluate("window.jobsSameDocument = true")

    start_worker()
    expect(statuses).to_have_text(["SUCCESSFUL", "SUCCESSFUL"])
    expect(page.locator("#jobs-workflow-summary")).to_contain_text("2 of 2 jobs finished")
    # The graph's boxes change colour with the table.
    expect(page.locator("svg.jobs-graph rect.jobs-graph-successful")).to_have_count(2)
    assert page.evaluate("window.jobsSameDocument") is True
    screenshot(page, "workflow")
    assert csp_violations == [], csp_violations
