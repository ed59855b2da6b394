"""The admin's pages in a real headless Chromium: they load without console errors or CSP
violations, their charts and progress bar hold the right values, and lists fit a laptop."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ingestion import admin as ingestion_admin
from ingestion.models import IngestFailure, IngestRun
from tests.browser import Page
from tests.customers.factories import create_customers
from tests.records import records

pytestmark = pytest.mark.django_db(transaction=True)  # the live server reads what the test wrote


@pytest.fixture
def page(browser, live_server):
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "unused"))
    return Page(browser, live_server.url, client.session.session_key, reverse("admin:login"))


def _run(**fields) -> IngestRun:
    defaults = {"trigger": "api", "source_url": "http://upstream.test", "page_size": 100, "status": "succeeded"}
    return IngestRun.objects.create(**{**defaults, **fields})


def _finished(seconds: float, **fields) -> IngestRun:
    started = timezone.now() - timedelta(hours=2)
    return _run(started_at=started, finished_at=started + timedelta(seconds=seconds), **fields)


def _rects(page, selector):
    return page.driver.find_elements(By.CSS_SELECTOR, selector)


def test_the_run_list_charts_the_last_runs_and_fits_a_laptop(page):
    for index in range(12):
        run = _finished(
            20 + index, fetched=10_000, inserted=9_990, invalid=10, status="failed" if index == 5 else "succeeded"
        )
        for position in range(index % 3):
            IngestFailure.objects.create(run=run, page=1, position=position + 1, reason="invalid_email", raw={})
    IngestFailure.objects.create(run=run, page=1, position=9, reason="too_long", raw={})

    page.open(reverse("admin:ingestion_ingestrun_changelist"))

    assert page.problems() == []
    throughput = _rects(page, "#chart-throughput rect.bar")
    assert len(throughput) == 12
    assert [float(bar.get_attribute("data-value")) for bar in throughput][:2] == [500.0, pytest.approx(476.2, 0.01)]
    assert len(_rects(page, "#chart-throughput rect.k-failed")) == 1
    assert float(_rects(page, "#chart-throughput rect.bar")[0].get_attribute("height")) > 100  # the tallest fills it
    failures = _rects(page, "#chart-failures rect.bar")
    assert sum(int(bar.get_attribute("data-value")) for bar in failures) == sum(i % 3 for i in range(12)) + 1
    assert page.driver.find_element(By.CSS_SELECTOR, "#chart-failures .chart-legend").text.split() == [
        "invalid_email",
        "too_long",
    ]
    page.screenshot("admin-run-list")
    assert not page.overflows_sideways(), page.widths()


def test_a_running_runs_page_moves_its_progress_bar_without_a_reload(page, monkeypatch):
    monkeypatch.setattr(ingestion_admin, "PROGRESS_INTERVAL_MS", 200)
    run = _run(status="running", started_at=timezone.now(), pages_expected=10, last_committed_page=2, fetched=200)
    run.inserted = 200
    run.save()

    page.open(reverse("admin:ingestion_ingestrun_change", args=[run.pk]))
    page.driver.execute_script("window.notReloaded = true")
    progress = page.driver.find_element(By.ID, "run-progress")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("2", "10")
    assert page.driver.find_element(By.ID, "run-progress-text").text == "2 / 10 pages (20 %)"

    IngestRun.objects.filter(pk=run.pk).update(last_committed_page=7, fetched=700, inserted=690, invalid=10)
    WebDriverWait(page.driver, 10).until(
        lambda driver: driver.find_element(By.ID, "run-progress").get_attribute("value") == "7"
    )

    assert page.driver.find_element(By.ID, "run-progress-text").text == "7 / 10 pages (70 %)"
    assert page.driver.find_element(By.CSS_SELECTOR, '[data-counter="inserted"]').text == "690"
    assert page.driver.find_element(By.ID, "run-verdict").text == "✓ adds up"
    assert page.driver.execute_script("return window.notReloaded") is True
    page.screenshot("admin-run-running")

    IngestRun.objects.filter(pk=run.pk).update(fetched=705)  # five records no outcome accounts for
    WebDriverWait(page.driver, 10).until(lambda driver: driver.find_element(By.ID, "run-verdict").text != "✓ adds up")
    assert page.driver.find_element(By.ID, "run-verdict").text == "✗ does not add up"
    assert page.driver.find_element(By.ID, "run-invariant").get_attribute("data-adds-up") == "false"

    IngestRun.objects.filter(pk=run.pk).update(status="succeeded", last_committed_page=10, fetched=1000, inserted=990)
    WebDriverWait(page.driver, 10).until(lambda driver: driver.find_element(By.ID, "run-status").text == "Succeeded")
    assert page.driver.find_element(By.ID, "run-progress").get_attribute("data-active") == "false"
    assert page.driver.find_element(By.ID, "run-verdict").text == "✓ adds up"
    assert page.problems() == []


def test_a_finished_runs_page_sums_it_up_in_one_line_that_adds_up(page):
    run = _finished(30, fetched=1000, inserted=900, updated=60, unchanged=20, invalid=12, conflicts=5, duplicates=3)
    run.last_committed_page = run.pages_expected = 10
    run.save()

    page.open(reverse("admin:ingestion_ingestrun_change", args=[run.pk]))

    assert page.problems() == []
    invariant = page.driver.find_element(By.ID, "run-invariant")
    assert invariant.get_attribute("data-adds-up") == "true"
    assert invariant.text.startswith("1000 fetched = 900 inserted + 60 updated + 20 unchanged + 12 invalid")
    assert invariant.text.endswith("✓ adds up")
    bar = {rect.get_attribute("data-outcome"): rect for rect in _rects(page, "#run-outcomes rect")}
    assert set(bar) == {"inserted", "updated", "unchanged", "invalid", "conflicts", "duplicates"}
    total = sum(float(rect.get_attribute("width")) for rect in bar.values())
    assert float(bar["inserted"].get_attribute("width")) / total == pytest.approx(0.9, abs=0.001)
    assert page.driver.find_element(By.ID, "run-progress-text").text == "10 / 10 pages (100 %)"
    # Details below the summary, the walk's internals folded away.
    assert page.driver.find_element(By.CSS_SELECTOR, "fieldset.collapse details, details").get_attribute("open") is None
    page.screenshot("admin-run-finished")


def test_the_failures_list_groups_by_reason_and_keeps_ids_on_one_line(page):
    run = _finished(10)
    reasons = ["invalid_email"] * 5 + ["too_long"] * 2 + ["email_conflict"]
    for position, reason in enumerate(reasons, start=1):
        raw = records(1, start=position)[0]
        IngestFailure.objects.create(
            run=run, page=1, position=position, reason=reason, raw={}, customer_id=raw["customer_id"],
            conflicting_customer_id=raw["customer_id"] if reason == "email_conflict" else None,
        )  # fmt: skip

    page.open(reverse("admin:ingestion_ingestfailure_changelist"))

    assert page.problems() == []
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#failures-by-reason tbody tr")
    assert [(row.get_attribute("data-reason"), row.get_attribute("data-count")) for row in rows] == [
        ("invalid_email", "5"),
        ("too_long", "2"),
        ("email_conflict", "1"),
    ]
    _assert_one_line(page, "td.field-customer_id")
    page.screenshot("admin-failures")
    assert not page.overflows_sideways(), page.widths()
    rows[1].find_element(By.TAG_NAME, "a").click()
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 2


def test_the_customer_list_fits_a_laptop_with_each_id_on_one_line(page):
    create_customers(5, updated_at=timezone.now())

    page.open(reverse("admin:customers_customer_changelist"))

    assert page.problems() == []
    _assert_one_line(page, "td.field-customer_id, th.field-customer_id")
    page.screenshot("admin-customers")
    assert not page.overflows_sideways(), page.widths()


def _assert_one_line(page, selector):
    cells = page.driver.find_elements(By.CSS_SELECTOR, selector)
    assert cells
    # Lines of text in each cell: the distinct tops of the boxes its text is laid out in.
    lines = page.driver.execute_script(LINES_OF_TEXT, cells)
    assert set(lines) == {1}, lines


LINES_OF_TEXT = """
return arguments[0].map(cell => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  return new Set(Array.from(range.getClientRects(), box => Math.round(box.top))).size;
});
"""
