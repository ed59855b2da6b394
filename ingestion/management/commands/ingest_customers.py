from django.core.management.base import BaseCommand, CommandError

from ingestion import deletions, pipeline, runs, tasks
from ingestion.models import IngestRun, RunMode, RunStatus, RunTrigger
from ingestion.reporting import cancelled_keeps, progress_line, summary_line


class Command(BaseCommand):
    help = (
        "Pull every customer from the upstream, validate, stage and merge them, and print a one-line summary. "
        "Runs in the foreground unless --background is given; exits non-zero when the run fails or is cancelled. "
        "--cancel RUN_ID stops a queued or running run instead; --release-deletions RUN_ID applies the deletions "
        "the mass-deletion guard held on a run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source-url", help="Base URL of the upstream (default: INGESTION_SOURCE_URL).")
        parser.add_argument("--page-size", type=int, help="Records per page, 1-100 (default: INGESTION_PAGE_SIZE).")
        parser.add_argument("--dry-run", action="store_true", help="Validate and count; write nothing to customers.")
        parser.add_argument(
            "--mode",
            choices=RunMode.values,
            help="full (the default) walks every record, then deletes what the upstream no longer lists; "
            "incremental reads what changed since the watermark, and the upstream's tombstones.",
        )
        parser.add_argument("--quiet", action="store_true", help="Print only the summary line.")
        parser.add_argument("--background", action="store_true", help="Queue the run for a worker and return.")
        choice = parser.add_mutually_exclusive_group()
        choice.add_argument("--resume", type=int, metavar="RUN_ID", help="Resume a failed, abandoned or cancelled run.")
        choice.add_argument(
            "--cancel", type=int, metavar="RUN_ID", help="Cancel a queued or running run; it keeps what it committed."
        )
        choice.add_argument(
            "--release-deletions",
            type=int,
            metavar="RUN_ID",
            help="Apply the deletions the mass-deletion guard held on a succeeded run.",
        )

    def handle(self, *args, **options):
        try:
            if options["cancel"] is not None:
                self._cancel(options)
                return
            if options["release_deletions"] is not None:
                self._release(options)
                return
            run = self._start(options)
        except runs.RunRefused as exc:
            raise CommandError(str(exc)) from None
        if options["background"]:
            self.stdout.write(f"Run {run.pk} queued; follow it at /api/ingest/runs/{run.pk}.")
            return
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(summary_line(run))
        self.stdout.write(summary_line(run))

    def _cancel(self, options) -> None:
        if _given(options, "source_url", "page_size", "dry_run", "background", "mode"):
            raise CommandError("--cancel takes only the run's id; drop the other options.")
        run = runs.cancel(options["cancel"], by="an operator on the command line")
        self.stdout.write(f"Run {run.pk} cancelled; it keeps {cancelled_keeps(run)}. Resume it with --resume {run.pk}.")

    def _release(self, options) -> None:
        if _given(options, "source_url", "page_size", "dry_run", "background", "mode"):
            raise CommandError("--release-deletions takes only the run's id; drop the other options.")
        run = deletions.release(options["release_deletions"], by="an operator on the command line")
        self.stdout.write(f"Run {run.pk}: deletions released; {run.deleted:,} customers deleted in all.")

    def _start(self, options) -> IngestRun:
        if options["resume"] is not None and _given(options, "source_url", "page_size", "dry_run", "mode"):
            raise CommandError("--resume continues a run with its own settings; drop the other options.")
        if options["background"]:
            if options["resume"] is not None:
                return tasks.resume_in_background(options["resume"])
            return tasks.start_in_background(
                trigger=RunTrigger.COMMAND,
                source_url=options["source_url"],
                page_size=options["page_size"],
                dry_run=options["dry_run"],
                mode=options["mode"] or RunMode.FULL,
            )
        progress = self._show_progress if not options["quiet"] and self.stdout.isatty() else None
        if options["resume"] is not None:
            run = pipeline.resume(options["resume"], progress=progress)
        else:
            run = pipeline.ingest(
                trigger=RunTrigger.COMMAND,
                source_url=options["source_url"],
                page_size=options["page_size"],
                dry_run=options["dry_run"],
                mode=options["mode"] or RunMode.FULL,
                progress=progress,
            )
        if progress:
            self.stdout.write("")
        return run

    def _show_progress(self, run: IngestRun) -> None:
        self.stdout.write("\r" + progress_line(run), ending="")
        self.stdout.flush()


def _given(options, *names) -> bool:
    # An id or a page size of 0 was given too: refuse it, do not take it for "not given".
    return any(options[name] is not None and options[name] is not False for name in names)
