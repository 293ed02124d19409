"""
The job browser and the dashboard in a real browser: Chromium driven by
Playwright against a live server, with a real worker running the jobs.

Its screenshots go to a temporary folder, or to SCREENSHOTS_DIR when set:
scripts/screenshots.sh sets it to docs/screenshots/ to refresh the README's.
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

from jobs.models import JobStatus, Schedule
from tests import tasks
from tests.conftest import job_status, wait_for_status

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def page(monkeypatch, live_server) -> Iterator:
    """A logged-out Chromium page, wide enough for every column of the job list."""
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
        context = browser.new_context(viewport={"width": 1680, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


@pytest.fixture
def screenshot(tmp_path) -> Callable[..., None]:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = False) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)

    return take


def test_operator_finds_a_failure_retries_it_cancels_a_job_and_reads_the_dashboard(
    page, live_server, start_worker, screenshot, request
):
    from playwright.sync_api import expect

    # A job that fails for real: the table it writes to does not exist yet.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS test_ledger")
    broken = tasks.record_run.using(max_attempts=1).enqueue("browser")
    done = [tasks.add.enqueue(n, n) for n in range(5)]
    done.append(tasks.add.using(tags=["browser"]).enqueue(5, 5))
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
    expect(page.locator("#result_list tbody tr")).to_have_count(8)
    screenshot(page, "job-list")
    # Every column fits a 1366 px screen, the admin's sidebars open.
    page.set_viewport_size({"width": 1366, "height": 768})
    page.reload()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the job list is {overflow} px wider than a 1366 px screen"
    page.set_viewport_size({"width": 1680, "height": 900})

    page.locator("#changelist-filter").get_by_role("link", name="browser", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("5, 5")
    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr th a").click()
    expect(page.locator(".jobs-error pre")).to_contain_text('relation "test_ledger" does not exist')
    expect(page.locator(".jobs-error pre")).to_contain_text("Traceback (most recent call last)")
    screenshot(page, "job-detail", full_page=True)

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
