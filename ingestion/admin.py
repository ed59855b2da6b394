"""Admin for pipeline records: read-only, tuned for large tables; buttons that start a run and cancel one."""

import json
import uuid

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from api.admin import EstimatedCountPaginator, ReadOnlyAdmin, large_unfiltered_rows
from config import tracing
from customers.models import Customer
from ingestion import charts, deletions, erasure, runs, tasks
from ingestion.deletions import held_notice
from ingestion.models import (
    ACTIVE_STATUSES,
    Erasure,
    ErasureDoor,
    IngestFailure,
    IngestRun,
    RunMode,
    RunTrigger,
)
from ingestion.reporting import cancelled_keeps
from ingestion.serializers import PERSONAL_FIELDS, mask

# How often a running run's page asks for its progress.
PROGRESS_INTERVAL_MS = 2000


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnlyAdmin):
    # What fits a laptop's width; every counter is on the run's page, summed up at its top.
    list_display = [
        "id", "status", "kind", "created", "duration", "pages_summary", "fetched", "inserted", "updated",
        "failures_link",
    ]  # fmt: skip
    list_filter = ["status", "mode", "trigger", "dry_run"]
    ordering = ["-id"]
    change_list_template = "admin/ingestion/ingestrun/change_list.html"
    change_form_template = "admin/ingestion/ingestrun/change_form.html"
    # The summary at the top of the page (change_form.html) says what the run is; these are its details.
    fieldsets = [
        (None, {"fields": [("status", "failures_link", "trace"), "notice", "error"]}),
        ("Run", {"fields": [("mode", "trigger", "dry_run", "attempt"), "source_url", "page_size", "updated_since"]}),
        ("Time", {"fields": [("created_at", "started_at"), ("finished_at", "heartbeat_at")]}),
        (
            "Counters",
            {
                # Summed up at the top of the page already.
                "classes": ["collapse"],
                "fields": [
                    ("fetched", "inserted", "updated", "unchanged"),
                    ("invalid", "conflicts", "duplicates", "suppressed"),
                    ("deleted", "restored", "tombstones"),
                    ("retries", "retries_by_reason"),
                ],
            },
        ),
        (
            "Walk",
            {
                "classes": ["collapse"],
                "fields": [
                    ("last_committed_page", "pages_expected", "records_expected"),
                    ("first_total", "total_changed", "records_walked", "last_tombstone_page"),
                    ("high_water", "upstream_started_at"),
                ],
            },
        ),
        (
            "Deletions",
            {"classes": ["collapse"], "fields": ["deletions_held", "deletions_released_at", "deletions_released_by"]},
        ),
    ]
    readonly_fields = [field.name for field in IngestRun._meta.fields if field.name != "trace_id"] + [
        "failures_link",
        "notice",
        "trace",
    ]

    class Media:
        css = {"all": ["ingestion/admin.css"]}
        js = ["ingestion/run_progress.js"]

    @admin.display(description="run")
    def kind(self, run):
        return f"{run.mode} · {run.trigger}" + (" · dry" if run.dry_run else "")

    @admin.display(description="created", ordering="created_at")
    def created(self, run):
        # Runs are kept for weeks (INGESTION_RETENTION_DAYS), not years: the month and day are enough.
        return timezone.localtime(run.created_at).strftime("%m-%d %H:%M")

    @admin.display(description="duration")
    def duration(self, run):
        seconds = run.duration_seconds
        return "-" if seconds is None else f"{seconds:,.1f} s"

    @admin.display(description="trace")
    def trace(self, run):
        """The run's trace id, a link where OTEL_TRACES_URL_TEMPLATE says traces open."""
        url = tracing.trace_url(run.trace_id)
        if url:
            return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', url, run.trace_id)
        return run.trace_id or "-"

    @admin.display(description="notice")
    def notice(self, run):
        return held_notice(run) or "-"

    @admin.display(description="pages")
    def pages_summary(self, run):
        return f"{run.pages_done}/{run.pages_expected or '?'}"

    @admin.display(description="failures")
    def failures_link(self, run):
        count = run.invalid + run.conflicts
        url = reverse("admin:ingestion_ingestfailure_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{} failures</a>', url, count)

    def get_urls(self):
        run_now = path("run-now/", self.admin_site.admin_view(self.run_now_view), name="ingestion_ingestrun_run_now")
        cancel = path(
            "<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="ingestion_ingestrun_cancel"
        )
        release = path(
            "<path:object_id>/release-deletions/",
            self.admin_site.admin_view(self.release_view),
            name="ingestion_ingestrun_release_deletions",
        )
        progress = path(
            "<path:object_id>/progress/",
            self.admin_site.admin_view(self.progress_view),
            name="ingestion_ingestrun_progress",
        )
        return [run_now, cancel, release, progress, *super().get_urls()]

    def progress_view(self, request, object_id):
        """What the run page's progress bar polls (run_progress.js): status, pages and counters, as JSON."""
        run = self.get_object(request, unquote(object_id))
        if run is None:
            return JsonResponse({"detail": "No such run."}, status=404)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return JsonResponse(charts.progress_document(run))

    def run_now_view(self, request):
        """The "Run ingestion now" buttons (full, incremental): queue a run for the worker, then back to the list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("ingestion.start_ingestion"):
            raise PermissionDenied
        mode = request.POST.get("mode", RunMode.FULL)
        try:
            run = tasks.start_in_background(trigger=RunTrigger.ADMIN, mode=mode)
        except runs.RunRefused as refused:
            self.message_user(request, str(refused), messages.WARNING)
        else:
            self.message_user(request, f"Run {run.pk} queued ({run.mode}); a worker will pick it up.", messages.SUCCESS)
        return redirect("admin:ingestion_ingestrun_changelist")

    def cancel_view(self, request, object_id):
        """The "Cancel run" button on a queued or running run's page: cancel it, then back to its page."""
        return self._run_button(
            request,
            object_id,
            lambda run, by: runs.cancel(run.pk, by=by),
            lambda run: f"Run {run.pk} cancelled; it keeps {cancelled_keeps(run)}.",
        )

    def release_view(self, request, object_id):
        """The "Release held deletions" button on a run the guard stopped: apply them, then back to its page."""
        return self._run_button(
            request,
            object_id,
            lambda run, by: deletions.release(run.pk, by=by),
            lambda run: f"Run {run.pk}: deletions released; {run.deleted:,} deleted.",
        )

    def _run_button(self, request, object_id, act, done):
        """A POST button on a run's page for operators: `act(run, by)`, its message, then back to the page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("ingestion.start_ingestion"):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        try:
            run = act(run, f"admin user {request.user.get_username()}")
        except runs.RunRefused as refused:
            self.message_user(request, str(refused), messages.WARNING)
        else:
            self.message_user(request, done(run), messages.SUCCESS)
        return redirect("admin:ingestion_ingestrun_change", run.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, unquote(object_id))
        operator = request.user.has_perm("ingestion.start_ingestion")
        context = {
            "may_cancel": run is not None and run.status in ACTIVE_STATUSES and operator,
            "may_release": run is not None and bool(held_notice(run)) and operator,
        }
        if run is not None:
            context |= {
                "progress": charts.progress(run),
                "breakdown": charts.outcome_breakdown(run),
                "progress_interval_ms": PROGRESS_INTERVAL_MS,
            }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **context})

    def changelist_view(self, request, extra_context=None):
        may_start = request.user.has_perm("ingestion.start_ingestion")
        recent = charts.recent_runs()
        context = {
            "may_start_ingestion": may_start,
            "throughput": charts.throughput_chart(recent),
            "failures": charts.failures_chart(recent),
        }
        return super().changelist_view(request, {**(extra_context or {}), **context})


@admin.register(IngestFailure)
class IngestFailureAdmin(ReadOnlyAdmin):
    # What fits a laptop beside the navigation and the filters; the conflicting id is on the failure's page.
    list_display = ["id", "run_id", "where", "reason", "customer_id", "created"]
    list_filter = ["reason"]
    search_fields = ["=customer_id"]
    paginator = EstimatedCountPaginator
    list_select_related = False
    raw_id_fields = ["run"]
    ordering = ["-id"]
    exclude = ["raw"]
    change_list_template = "admin/ingestion/ingestfailure/change_list.html"

    class Media:
        css = {"all": ["ingestion/admin.css"]}

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None and large_unfiltered_rows(changelist.queryset, self.paginator.exact_below):
            # As the paginator does not count a large table unfiltered, grouping does not read all of it.
            response.context_data["by_reason_needs_filter"] = True
        elif changelist is not None:
            # Grouped by reason, under the filters the list shows (a run, a reason): one GROUP BY on the index.
            by_reason = list(
                changelist.queryset.order_by().values_list("reason").annotate(count=Count("pk")).order_by("-count")
            )
            peak = max((count for _, count in by_reason), default=0)
            response.context_data["by_reason"] = [
                (reason, count, 200 * count / peak if peak else 0) for reason, count in by_reason
            ]
        return response

    @admin.display(description="page · record", ordering="position")
    def where(self, failure):
        return f"{failure.page} · {failure.position}"

    @admin.display(description="created", ordering="created_at")
    def created(self, failure):
        return timezone.localtime(failure.created_at).strftime("%Y-%m-%d %H:%M")

    def get_readonly_fields(self, request, obj=None):
        # Chosen per request: the admin instance is shared by every thread, so it must not
        # remember who is looking.
        record = "full_record" if request.user.has_perm("ingestion.view_personal_data") else "masked_record"
        fields = ["run", "page", "position", "customer_id", "reason", "errors", record]
        return [*fields, "conflicting_customer_id", "created_at"]

    @admin.display(description="raw record")
    def full_record(self, failure):
        return format_html("<pre>{}</pre>", _pretty(failure.raw))

    @admin.display(description="raw record (email and phone masked)")
    def masked_record(self, failure):
        raw = failure.raw
        if isinstance(raw, dict):
            raw = {key: mask(value) if key in PERSONAL_FIELDS else value for key, value in raw.items()}
        return format_html("<pre>{}</pre>", _pretty(raw))

    def get_search_results(self, request, queryset, search_term):
        # Search is by customer id; text that is not a UUID can match nothing, so answer
        # with no rows instead of a database error.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            uuid.UUID(term)
        except ValueError:
            return queryset.none(), False
        return super().get_search_results(request, queryset, term)


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# An erasure takes one transaction per customer; a selection larger than this is refused.
ERASE_AT_ONCE = 100


@admin.action(description="Erase selected customers' personal data", permissions=["erase"])
def erase_customers(modeladmin, request, queryset):
    """Confirm, then erase each selected customer (ingestion/erasure.py) and say how many."""
    selected = list(queryset.values_list("customer_id", flat=True)[: ERASE_AT_ONCE + 1])
    if len(selected) > ERASE_AT_ONCE:
        modeladmin.message_user(request, f"Select at most {ERASE_AT_ONCE} customers to erase.", messages.ERROR)
        return None
    if request.POST.get("confirmed") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "opts": modeladmin.model._meta,
            "title": "Erase customers",
            "selected": selected,
            "count": len(selected),
        }
        return TemplateResponse(request, "admin/customers/customer/erase_confirmation.html", context)
    reason = request.POST.get("reason", "")[:1000]
    for customer_id in selected:
        erasure.erase(customer_id, by=request.user.get_username(), door=ErasureDoor.ADMIN, reason=reason)
    modeladmin.message_user(
        request,
        f"Erased {len(selected)} customer(s); their ids are suppressed from later ingestions.",
        messages.SUCCESS,
    )
    return None


# customers does not import ingestion, where erasure lives: the action joins the customer admin from here.
_customer_admin = admin.site.get_model_admin(Customer)
_customer_admin.actions = [*(_customer_admin.actions or []), erase_customers]


@admin.register(Erasure)
class ErasureAdmin(ReadOnlyAdmin):
    """The erasure audit: who erased (or lifted) what, when and why; the person only as a keyed hash."""

    list_display = ["id", "action", "at", "requested_by", "door", "reason", "short_subject"]
    list_filter = ["action", "door"]
    search_fields = ["=subject", "requested_by"]
    readonly_fields = ["action", "subject", "requested_by", "door", "reason", "at", "removed"]

    @admin.display(description="subject")
    def short_subject(self, entry):
        return f"{entry.subject[:12]}…"
