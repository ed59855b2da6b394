import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from api.admin import EstimatedCountPaginator
from ingestion.models import IngestFailure, IngestRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client():
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    return client


def staff_client(*codenames):
    user = User.objects.create_user("staffer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def make_run(**fields):
    defaults = {"trigger": "api", "source_url": "http://x", "page_size": 100, "status": "succeeded"}
    return IngestRun.objects.create(**{**defaults, **fields})


def test_runs_list_shows_counters_and_links_to_failures(superuser_client, django_assert_max_num_queries):
    run = make_run(fetched=12, inserted=10, invalid=1, conflicts=1)
    with django_assert_max_num_queries(12):
        response = superuser_client.get(reverse("admin:ingestion_ingestrun_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Run ingestion now" in body
    assert f"?run__id__exact={run.pk}" in body and "2 failures" in body


def test_runs_and_failures_are_read_only(superuser_client):
    run = make_run()
    failure = IngestFailure.objects.create(run=run, page=1, position=1, reason="invalid_email", errors={}, raw={})
    assert superuser_client.get(reverse("admin:ingestion_ingestrun_add")).status_code == 403
    change = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content
    assert superuser_client.post(reverse("admin:ingestion_ingestrun_delete", args=[run.pk])).status_code == 403
    assert superuser_client.post(reverse("admin:ingestion_ingestfailure_delete", args=[failure.pk])).status_code == 403


def test_run_page_shows_which_attempt_executes_the_run(superuser_client):
    run = make_run(attempt=3)

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content.decode()

    attempt = r'fieldBox field-attempt">\s*<label[^>]*>Attempt:</label>\s*<div class="readonly">3</div>'
    assert re.search(attempt, page, re.DOTALL)
    assert "· attempt 3" in page  # and in the summary at the top


def test_run_now_button_queues_a_run(superuser_client):
    response = superuser_client.post(reverse("admin:ingestion_ingestrun_run_now"), follow=True)
    run = IngestRun.objects.get()
    assert (run.trigger, run.status) == ("admin", "queued")
    assert f"Run {run.pk} queued" in response.content.decode()


def test_run_now_reports_an_active_run_instead_of_failing(superuser_client):
    active = make_run(status="running")
    response = superuser_client.post(reverse("admin:ingestion_ingestrun_run_now"), follow=True)
    assert f"run {active.pk} is running" in response.content.decode()
    assert IngestRun.objects.count() == 1


def test_run_now_needs_the_start_permission():
    client = staff_client("view_ingestrun")
    assert client.post(reverse("admin:ingestion_ingestrun_run_now")).status_code == 403
    assert b"Run ingestion now" not in client.get(reverse("admin:ingestion_ingestrun_changelist")).content
    assert not IngestRun.objects.exists()


def test_run_now_only_accepts_post(superuser_client):
    assert superuser_client.get(reverse("admin:ingestion_ingestrun_run_now")).status_code == 405


def test_failures_filter_search_and_mask_personal_data():
    run = make_run()
    raw = {"customer_id": "5e0c3f4e-8d5b-4b8f-9d0a-6f1d2c3b4a59", "email": "jane@example.com", "phone": "+1 555 0100"}
    failure = IngestFailure.objects.create(
        run=run, page=1, position=1, reason="invalid_email", errors={"email": ["bad"]}, raw=raw,
        customer_id=raw["customer_id"],
    )  # fmt: skip
    client = staff_client("view_ingestfailure", "view_ingestrun")
    listing = client.get(
        reverse("admin:ingestion_ingestfailure_changelist") + f"?q={raw['customer_id']}&reason=invalid_email"
    )
    assert listing.status_code == 200 and str(failure.pk) in listing.content.decode()
    assert client.get(reverse("admin:ingestion_ingestfailure_changelist") + "?q=not-a-uuid").status_code == 200
    page = client.get(reverse("admin:ingestion_ingestfailure_change", args=[failure.pk])).content.decode()
    assert "j***@example.com" in page and "jane@example.com" not in page and "+1 555 0100" not in page


def test_failures_show_personal_data_with_the_permission():
    run = make_run()
    failure = IngestFailure.objects.create(
        run=run, page=1, position=1, reason="invalid_email", errors={}, raw={"email": "jane@example.com"}
    )
    client = staff_client("view_ingestfailure", "view_personal_data")
    page = client.get(reverse("admin:ingestion_ingestfailure_change", args=[failure.pk])).content.decode()
    assert "jane@example.com" in page


def cancel_url(run) -> str:
    return reverse("admin:ingestion_ingestrun_cancel", args=[run.pk])


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_active_runs_page_has_a_cancel_button(superuser_client, status):
    run = make_run(status=status)

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content.decode()

    assert "Cancel run" in page and f'action="{cancel_url(run)}"' in page


@pytest.mark.parametrize("status", ["succeeded", "failed", "abandoned", "cancelled"])
def test_a_stopped_runs_page_has_no_cancel_button(superuser_client, status):
    run = make_run(status=status)

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content.decode()

    assert "Cancel run" not in page


def test_cancel_button_cancels_the_run_and_says_what_it_keeps(superuser_client):
    run = make_run(status="running", last_committed_page=2, fetched=200)

    response = superuser_client.post(cancel_url(run), follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:ingestion_ingestrun_change", args=[run.pk])
    assert f"Run {run.pk} cancelled; it keeps the 2 pages (200 records) it committed." in response.content.decode()
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "Cancelled by admin user boss.")


def test_cancel_of_a_run_that_finished_meanwhile_is_reported_instead_of_failing(superuser_client):
    run = make_run(status="succeeded")

    response = superuser_client.post(cancel_url(run), follow=True)

    assert response.status_code == 200
    assert f"Run {run.pk} is succeeded; only queued or running runs can be cancelled." in response.content.decode()
    assert IngestRun.objects.get(pk=run.pk).status == "succeeded"


def test_cancel_needs_the_start_permission_and_a_post():
    run = make_run(status="running")
    viewer = staff_client("view_ingestrun")

    assert viewer.post(cancel_url(run)).status_code == 403
    assert b"Cancel run" not in viewer.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content
    assert IngestRun.objects.get(pk=run.pk).status == "running"


def test_cancel_only_accepts_post(superuser_client):
    run = make_run(status="running")
    assert superuser_client.get(cancel_url(run)).status_code == 405
    assert IngestRun.objects.get(pk=run.pk).status == "running"


@pytest.mark.parametrize("run_id", ["999999", "abc"])
def test_cancel_of_an_unknown_run_is_reported_not_a_server_error(superuser_client, run_id):
    url = reverse("admin:ingestion_ingestrun_changelist") + f"{run_id}/cancel/"

    response = superuser_client.post(url, follow=True)

    assert response.status_code == 200
    # Django's own sentence for a missing object, with its typographic quotes.
    assert f"with ID \u201c{run_id}\u201d doesn\u2019t exist" in response.content.decode()


def test_run_page_links_its_trace_where_traces_open(superuser_client, settings):
    traced = make_run(trace_id="ab" * 16)
    untraced = make_run()
    url = lambda run: reverse("admin:ingestion_ingestrun_change", args=[run.pk])  # noqa: E731

    assert "ab" * 16 in superuser_client.get(url(traced)).content.decode()
    settings.TRACING_URL_TEMPLATE = "https://traces.example/trace/{trace_id}"
    page = superuser_client.get(url(traced)).content.decode()
    assert f'<a href="https://traces.example/trace/{"ab" * 16}" rel="noopener noreferrer">{"ab" * 16}</a>' in page
    assert "traces.example" not in superuser_client.get(url(untraced)).content.decode()


def _finished_run(seconds, **fields):
    started = timezone.now() - timedelta(hours=1)
    return make_run(started_at=started, finished_at=started + timedelta(seconds=seconds), **fields)


def test_run_list_charts_rows_per_second_and_failures_by_reason_of_the_last_runs(superuser_client):
    fast = _finished_run(10, fetched=1000, inserted=1000)
    slow = _finished_run(100, fetched=1000, inserted=990, invalid=10, status="failed")
    for position in range(1, 4):
        IngestFailure.objects.create(run=slow, page=1, position=position, reason="invalid_email", raw={})
    IngestFailure.objects.create(run=slow, page=1, position=4, reason="too_long", raw={})
    make_run(status="queued")  # never started: not a bar

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_changelist")).content.decode()

    assert 'id="chart-throughput" data-bars="2" data-peak="100.0"' in page
    assert (
        f'data-run="{fast.pk}" data-value="100"><title>Run {fast.pk}: 100 rows/s, 1,000 rows, succeeded</title>' in page
    )
    assert f'data-run="{slow.pk}" data-value="10"><title>Run {slow.pk}: 10 rows/s, 1,000 rows, failed</title>' in page
    assert 'id="chart-failures" data-bars="2" data-peak="4.0"' in page
    assert (
        f"<title>Run {slow.pk}: 3 invalid_email</title>" in page and f"<title>Run {slow.pk}: 1 too_long</title>" in page
    )


def test_run_list_without_started_runs_draws_no_chart(superuser_client):
    make_run(status="queued")
    assert (
        "chart-throughput" not in superuser_client.get(reverse("admin:ingestion_ingestrun_changelist")).content.decode()
    )


def test_run_page_sums_up_the_run_and_shows_its_counters_adding_up(superuser_client):
    run = _finished_run(4, fetched=12, inserted=7, updated=2, unchanged=1, invalid=1, duplicates=1, pages_expected=3)
    run.last_committed_page = 3
    run.save()

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content.decode()

    assert '<span id="run-progress-text">3 / 3 pages (100 %)</span>' in page
    assert 'data-active="false"' in page
    assert 'id="run-invariant" data-adds-up="true"' in page and "✓ adds up" in page
    assert '<span data-counter="fetched">12</span> fetched' in page
    assert 'data-outcome="inserted" data-value="7"' in page and 'data-outcome="updated" data-value="2"' in page
    assert 'data-outcome="conflicts"' not in page  # nothing to draw


def test_run_page_says_when_counters_do_not_add_up(superuser_client):
    run = _finished_run(4, fetched=12, inserted=7)
    page = superuser_client.get(reverse("admin:ingestion_ingestrun_change", args=[run.pk])).content.decode()
    assert 'data-adds-up="false"' in page and "✗ does not add up" in page


def test_every_field_of_a_run_is_on_its_page_once():
    from ingestion.admin import IngestRunAdmin

    shown = []
    for _, options in IngestRunAdmin.fieldsets:
        for line in options["fields"]:
            shown += list(line) if isinstance(line, tuple) else [line]
    fields = {field.name for field in IngestRun._meta.fields} - {"id", "trace_id"}
    assert len(shown) == len(set(shown))
    assert set(shown) == fields | {"notice", "failures_link", "trace"}


def test_progress_view_answers_a_running_runs_figures_as_json(superuser_client):
    run = make_run(status="running", pages_expected=8, last_committed_page=2, fetched=200, inserted=200)

    response = superuser_client.get(reverse("admin:ingestion_ingestrun_progress", args=[run.pk]))

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("status", "status_display", "active", "pages_done", "pages_expected")} == {
        "status": "running",
        "status_display": "Running",
        "active": True,
        "pages_done": 2,
        "pages_expected": 8,
    }
    assert (body["percent"], body["fetched"], body["inserted"], body["suppressed"]) == (25, 200, 200, 0)
    assert body["adds_up"] is True
    assert superuser_client.get(reverse("admin:ingestion_ingestrun_progress", args=[999999])).status_code == 404


def test_progress_needs_the_view_permission_on_runs():
    run = make_run(status="running")
    url = reverse("admin:ingestion_ingestrun_progress", args=[run.pk])
    client = staff_client()
    assert client.get(url).status_code == 403
    User.objects.get(username="staffer").user_permissions.add(Permission.objects.get(codename="view_ingestrun"))
    assert client.get(url).status_code == 200


def test_failures_are_grouped_by_reason_under_the_lists_filters(superuser_client):
    first, second = make_run(), make_run()
    for position, reason in enumerate(["invalid_email", "invalid_email", "too_long"], start=1):
        IngestFailure.objects.create(run=first, page=1, position=position, reason=reason, raw={})
    IngestFailure.objects.create(run=second, page=1, position=1, reason="too_long", raw={})
    url = reverse("admin:ingestion_ingestfailure_changelist")

    everything = superuser_client.get(url).content.decode()
    one_run = superuser_client.get(url + f"?run__id__exact={first.pk}").content.decode()

    assert '<tr data-reason="too_long" data-count="2">' in everything
    assert '<tr data-reason="invalid_email" data-count="2">' in everything
    assert '<tr data-reason="invalid_email" data-count="2">' in one_run
    assert '<tr data-reason="too_long" data-count="1">' in one_run
    assert f'href="?run__id__exact={first.pk}&amp;reason__exact=too_long"' in one_run  # keeps the run filter


def test_failures_of_a_large_table_are_grouped_only_under_a_filter(superuser_client, monkeypatch):
    run = make_run()
    for position, reason in enumerate(["invalid_email", "too_long", "too_long"], start=1):
        IngestFailure.objects.create(run=run, page=1, position=position, reason=reason, raw={})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingestion_ingestfailure")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 2)  # three rows count as a large table
    url = reverse("admin:ingestion_ingestfailure_changelist")

    with CaptureQueriesContext(connection) as unfiltered:
        everything = superuser_client.get(url).content.decode()
    one_run = superuser_client.get(url + f"?run__id__exact={run.pk}").content.decode()

    assert "choose a run or a reason on the right to see them by reason" in everything
    assert "data-reason=" not in everything
    assert not [query for query in unfiltered if "GROUP BY" in query["sql"]]
    assert '<tr data-reason="too_long" data-count="2">' in one_run


def test_run_list_charts_only_the_newest_30_runs(superuser_client):
    started = timezone.now() - timedelta(days=1)
    runs = [
        make_run(started_at=started + timedelta(minutes=i), finished_at=started + timedelta(minutes=i, seconds=10))
        for i in range(31)
    ]

    page = superuser_client.get(reverse("admin:ingestion_ingestrun_changelist")).content.decode()

    assert 'id="chart-throughput" data-bars="30"' in page
    assert f'data-run="{runs[0].pk}"' not in page and f'data-run="{runs[-1].pk}"' in page
