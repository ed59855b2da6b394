"""A real headless Chromium for the admin's browser tests (Selenium, with the system's browser and driver).

Without chromium and chromedriver on PATH the tests that ask for `browser` are skipped with
a sentence saying how to run them. Screenshots of the pages they check are written under
.local/screenshots/ (git-ignored) for reviewers.
"""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / ".local" / "screenshots"
# A laptop's screen (1440 x 900, the admin's navigation open): the lists must fit it without scrolling sideways.
WINDOW = (1440, 900)
HOW_TO_RUN = (
    "The admin's browser tests need Chromium and its driver on PATH, which this machine lacks: "
    "on Debian or Ubuntu `apt-get install chromium chromium-driver` (CI's .ci/run does), then `make test`."
)


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser(transactional_db, live_server):
    """A fresh headless Chromium per test, quit at its end.

    Per test, not per session: its kept-alive connections hold the live server's request
    threads, and each thread a database session, for as long as it runs, and later tests
    count the sessions of the test database (a heartbeat's, a worker's).
    """
    found = chromium()
    if found is None:
        pytest.skip(HOW_TO_RUN)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size={},{}".format(*WINDOW),
    ):
        options.add_argument(argument)
    # Everything the page logs, CSP violations and script errors included, for get_log("browser").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver given explicitly: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        _end_idle_sessions()


def _end_idle_sessions() -> None:
    """End the sessions the live server's request threads leave idle once the browser is gone.

    Django closes a thread's connection when the HTTP connection ends, but the threads that
    served Chromium's kept-alive connections were seen to outlive it, idle, holding theirs.
    Nothing else is connected to the test database in these tests.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
        )


class Page:
    """The browser signed in with `session_key` on the live server; what each page logged and how wide it is."""

    def __init__(self, driver, base_url: str, session_key: str, start: str):
        self.driver, self.base_url = driver, base_url
        driver.get(base_url + start)  # a page of the site, so its cookie can be set
        driver.delete_all_cookies()
        driver.add_cookie({"name": "sessionid", "value": session_key, "path": "/"})
        driver.get_log("browser")  # start from an empty log

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def problems(self) -> list[str]:
        """Console errors and warnings since the last call: script errors, CSP violations, failed loads."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]

    def widths(self) -> dict:
        """What `overflows_sideways` compares, and each list column's width: the message when a list is too wide."""
        return self.driver.execute_script(WIDTHS)

    def overflows_sideways(self) -> bool:
        """Whether the page, or the admin's list inside it (which scrolls on its own), is wider than the window."""
        return self.driver.execute_script(
            "const list = document.querySelector('#changelist .results');"
            "return document.documentElement.scrollWidth > window.innerWidth"
            " || (list !== null && list.scrollWidth > list.clientWidth)"
        )

    def screenshot(self, name: str) -> Path:
        """The whole page (up to 4,000 px tall) as .local/screenshots/<name>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WINDOW[0], max(WINDOW[1], min(height, 4000)))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*WINDOW)
        return path


WIDTHS = """
const list = document.querySelector('#changelist .results');
return {
  page: document.documentElement.scrollWidth, window: window.innerWidth,
  list: list && list.scrollWidth, room: list && list.clientWidth,
  columns: Array.from(document.querySelectorAll('#result_list thead th'),
                      th => th.className + ': ' + Math.round(th.getBoundingClientRect().width)),
};
"""
