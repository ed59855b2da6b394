"""HTTP servers (gunicorn, uvicorn) on free loopback ports, started for a benchmark and always stopped."""

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.environment import ROOT
from config import processes

START_TIMEOUT = 60.0


@contextmanager
def gunicorn(args: list[str], *, env: dict[str, str], log: Path, health: str = "/api/health") -> Iterator[str]:
    """Serve with `gunicorn ARGS --bind 127.0.0.1:PORT`; yield the base URL once `health` answers 200."""
    with serving(
        lambda port: [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{port}", "--no-control-socket"],
        env=env,
        log=log,
        health=health,
    ) as url:
        yield url


@contextmanager
def serving(argv_for_port, *, env: dict[str, str], log: Path, health: str) -> Iterator[str]:
    """Start the server `argv_for_port(port)` on a free loopback port; yield its base URL once
    `health` answers 200, and always stop it (its whole session) afterwards."""
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    children = {"gunicorn": processes.start(argv_for_port(port), cwd=ROOT, env=env, log=log)}
    try:
        _wait_healthy(children, url + health, log)
        yield url
    finally:
        processes.stop(children)


def _wait_healthy(children: dict[str, subprocess.Popen], url: str, log: Path) -> None:
    try:
        processes.wait_healthy({"gunicorn": url}, children, timeout=START_TIMEOUT)
    except processes.ProcessError:
        # The benchmarks' own sentences, which point at the server's log.
        if (code := children["gunicorn"].poll()) is not None:
            raise RuntimeError(f"The server exited with {code} before answering; see {log.name}.") from None
        raise RuntimeError(f"The server did not answer {url} within {START_TIMEOUT:.0f} s; see {log.name}.") from None


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks stop the servers."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
