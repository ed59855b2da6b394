import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config import processes

SLEEPS = "import time; time.sleep(30)"
# Says "ready" once SIGTERM is ignored, so a test never signals it before that.
IGNORES_TERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(30)\n"
)
# Leaves a grandchild that ignores SIGTERM in its session, as a gunicorn master leaves workers.
LEAVES_GRANDCHILD = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {IGNORES_TERM!r}])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def spawn(tmp_path):
    """Start `python -c CODE` children through processes.start; whatever is left is killed afterwards."""
    started = {}

    def spawn_one(name: str, code: str, **options) -> subprocess.Popen:
        started[name] = processes.start([sys.executable, "-c", code], cwd=tmp_path, env=os.environ, **options)
        return started[name]

    yield spawn_one
    processes.stop(started, timeout=0)


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _ended(pid: int) -> bool:
    """Whether `pid` is gone, or only a zombie waiting for init (it is not our child to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_child_leads_its_own_session(spawn):
    child = spawn("sleeper", SLEEPS)

    assert os.getsid(child.pid) == child.pid


def test_stdout_and_stderr_are_appended_to_the_log(spawn, tmp_path):
    log = tmp_path / "child.log"
    log.write_text("earlier\n")

    spawn("talker", "import sys; print('out'); print('err', file=sys.stderr)", log=log).wait(5)

    assert log.read_text().split() == ["earlier", "out", "err"]


def test_a_quiet_child_writes_nowhere_and_a_plain_one_shares_our_output(spawn, capfd):
    spawn("quiet", "import sys; print('hushed'); print('hushed', file=sys.stderr)", quiet=True).wait(5)
    spawn("plain", "import sys; print('shared'); print('shared too', file=sys.stderr)").wait(5)

    output = capfd.readouterr()
    assert (output.out, output.err) == ("shared\n", "shared too\n")


def test_children_that_obey_sigterm_stop_without_being_killed(spawn):
    children = {name: spawn(name, SLEEPS) for name in ("first", "second")}
    killed = []

    processes.stop(children, timeout=5, on_kill=killed.append)

    assert killed == []
    assert [process.returncode for process in children.values()] == [-signal.SIGTERM, -signal.SIGTERM]


def test_children_ignoring_sigterm_are_killed_after_the_timeout_last_started_first(spawn, tmp_path):
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    children = {name: spawn(name, IGNORES_TERM, log=log) for name, log in logs.items()}
    assert _wait_for(lambda: all(log.read_text() == "ready\n" for log in logs.values()))
    killed = []

    started = time.monotonic()
    processes.stop(children, timeout=0.5, on_kill=killed.append)

    assert killed == ["second", "first"]
    assert [process.returncode for process in children.values()] == [-signal.SIGKILL, -signal.SIGKILL]
    assert 0.5 <= time.monotonic() - started < 3


def test_stop_also_kills_what_a_stopped_child_left_in_its_session(spawn, tmp_path):
    log = tmp_path / "parent.log"
    parent = spawn("parent", LEAVES_GRANDCHILD, log=log)
    assert _wait_for(lambda: len(log.read_text().split()) == 2)  # its pid, then "ready"
    grandchild = int(next(word for word in log.read_text().split() if word.isdigit()))
    killed = []

    processes.stop({"parent": parent}, timeout=2, on_kill=killed.append)

    assert killed == []  # the parent itself obeyed SIGTERM
    assert parent.returncode == -signal.SIGTERM
    assert _wait_for(lambda: _ended(grandchild), timeout=2)


def test_stopping_a_child_that_already_ended_is_quiet(spawn):
    child = spawn("quitter", "pass")
    child.wait(5)
    killed = []

    processes.stop({"quitter": child}, timeout=1, on_kill=killed.append)

    assert killed == []
    assert child.returncode == 0


def test_check_alive_passes_while_children_run_and_names_one_that_exited(spawn):
    running = spawn("sleeper", SLEEPS)
    processes.check_alive({"sleeper": running})

    quitter = spawn("quitter", "raise SystemExit(3)")
    quitter.wait(5)

    with pytest.raises(processes.ProcessError, match=r"^quitter exited with code 3 unexpectedly\.$"):
        processes.check_alive({"sleeper": running, "quitter": quitter})


def test_check_alive_names_the_signal_that_killed_a_child_in_the_callers_error(spawn):
    class LauncherError(Exception):
        pass

    victim = spawn("victim", SLEEPS)
    victim.kill()
    victim.wait(5)

    with pytest.raises(LauncherError, match=r"^victim was killed by SIGKILL unexpectedly\.$"):
        processes.check_alive({"victim": victim}, error=LauncherError)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def health_server():
    """A local server: 200 on /health, 503 on any other path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_wait_healthy_returns_once_every_url_answers_200(spawn, health_server):
    children = {"sleeper": spawn("sleeper", SLEEPS)}

    processes.wait_healthy({"a": f"{health_server}/health", "b": f"{health_server}/health"}, children, timeout=5)


def test_wait_healthy_names_what_did_not_answer_200_in_time(spawn, health_server):
    children = {"sleeper": spawn("sleeper", SLEEPS)}
    urls = {"up": f"{health_server}/health", "down": f"{health_server}/broken"}

    with pytest.raises(processes.ProcessError) as raised:
        processes.wait_healthy(urls, children, timeout=0.5)

    assert str(raised.value) == f"No answer 200 within 0.5 s from down ({health_server}/broken)."


def test_wait_healthy_stops_waiting_when_a_child_ends(spawn):
    children = {"web": spawn("web", "raise SystemExit(2)")}
    started = time.monotonic()

    with pytest.raises(processes.ProcessError, match=r"^web exited with code 2 unexpectedly\.$"):
        processes.wait_healthy({"web": f"http://127.0.0.1:{processes.free_port()}/health"}, children, timeout=30)
    assert time.monotonic() - started < 5


def test_free_port_can_be_bound():
    port = processes.free_port()

    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
