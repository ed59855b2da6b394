from django.core.management.base import BaseCommand, CommandError

from ingestion import pipeline, runs, tasks
from ingestion.models import IngestRun, RunStatus, RunTrigger
from ingestion.reporting import progress_line, summary_line


class Command(BaseCommand):
    help = (
        "Pull every customer from the upstream, validate, stage and merge them, and print a one-line summary. "
        "Runs in the foreground unless --background is given; exits non-zero when the run fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source-url", help="Base URL of the upstream (default: INGESTION_SOURCE_URL).")
        parser.add_argument("--page-size", type=int, help="Records per page, 1-100 (default: INGESTION_PAGE_SIZE).")
        parser.add_argument("--dry-run", action="store_true", help="Validate and count; write nothing to customers.")
        parser.add_argument("--quiet", action="store_true", help="Print only the summary line.")
        parser.add_argument("--background", action="store_true", help="Queue the run for a worker and return.")
        parser.add_argument("--resume", type=int, metavar="RUN_ID", help="Resume a failed or abandoned run.")

    def handle(self, *args, **options):
        try:
            run = self._start(options)
        except runs.RunRefused as exc:
            raise CommandError(str(exc)) from None
        if options["background"]:
            self.stdout.write(f"Run {run.pk} queued; follow it at /api/ingest/runs/{run.pk}.")
            return
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(summary_line(run))
        self.stdout.write(summary_line(run))

    def _start(self, options) -> IngestRun:
        if options["resume"] and (options["source_url"] or options["page_size"] or options["dry_run"]):
            raise CommandError("--resume continues a run with its own settings; drop the other options.")
        if options["background"]:
            if options["resume"]:
                return tasks.resume_in_background(options["resume"])
            return tasks.start_in_background(
                trigger=RunTrigger.COMMAND,
                source_url=options["source_url"],
                page_size=options["page_size"],
                dry_run=options["dry_run"],
            )
        progress = self._show_progress if not options["quiet"] and self.stdout.isatty() else None
        if options["resume"]:
            run = pipeline.resume(options["resume"], progress=progress)
        else:
            run = pipeline.ingest(
                trigger=RunTrigger.COMMAND,
                source_url=options["source_url"],
                page_size=options["page_size"],
                dry_run=options["dry_run"],
                progress=progress,
            )
        if progress:
            self.stdout.write("")
        return run

    def _show_progress(self, run: IngestRun) -> None:
        self.stdout.write("\r" + progress_line(run), ending="")
        self.stdout.flush()
