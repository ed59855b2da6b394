"""The procrastinate jobs that execute runs, as the run life cycle needs them: whether a
queued run still has a job that will execute it, and cancelling a job still waiting.

Apart from `tasks` (which registers the task under `EXECUTE_RUN_TASK`) so that `runs`
can ask without importing the pipeline.
"""

from django.db.models import Exists, OuterRef, QuerySet, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

EXECUTE_RUN_TASK = "ingestion.execute_run"
# A job in these will still execute its run (or is doing so); any other status never will.
LIVE = ("todo", "doing")


def of_run(run_id: int | OuterRef) -> QuerySet:
    """Every job ever deferred for the run (a resumed run has one per resume), newest first."""
    # Compared as text: `args` is jsonb, where the run id is a number.
    run_key = Cast(run_id, TextField()) if isinstance(run_id, OuterRef) else str(run_id)
    jobs = ProcrastinateJob.objects.filter(task_name=EXECUTE_RUN_TASK).alias(run_key=KT("args__run_id"))
    return jobs.filter(run_key=run_key).order_by("-id")


def has_live_job() -> Exists:
    """For a run queryset: the run has a job that is waiting or executing."""
    return Exists(of_run(OuterRef("pk")).filter(status__in=LIVE))


def cancel_waiting(run_id: int) -> list[int]:
    """Cancel the run's jobs no worker has taken yet; return their ids. A job already taken finds its run cancelled."""
    waiting = list(of_run(run_id).filter(status="todo").values_list("pk", flat=True))
    return [job_id for job_id in waiting if app.job_manager.cancel_job_by_id(job_id)]


def gone(run_id: int) -> str:
    """Why no job will execute the run, in a phrase: its newest job's status, or that it has none."""
    job = of_run(run_id).first()
    return f"its job {job.pk} is {job.status}" if job else "it has no job"
