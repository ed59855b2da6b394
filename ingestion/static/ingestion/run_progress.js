// The run page's live part (templates/admin/ingestion/ingestrun/change_form.html): while the run
// is queued or running, ask the admin's progress/ view for its figures and update the progress
// bar, the counters and the status in place, without reloading the page.
"use strict";
// The admin loads its media in the page's head: wait for the page itself.
document.addEventListener("DOMContentLoaded", function () {
  const bar = document.getElementById("run-progress");
  if (!bar || bar.dataset.active !== "true") {
    return;
  }
  const interval = Number(bar.dataset.intervalMs) || 2000;
  const text = document.getElementById("run-progress-text");
  const status = document.getElementById("run-status");
  const verdict = document.getElementById("run-verdict");

  function show(run) {
    if (run.pages_expected) {
      bar.max = run.pages_expected;
      bar.value = run.pages_done;
    }
    const expected = run.pages_expected === null ? "?" : run.pages_expected;
    const percent = run.percent === null ? "" : " (" + run.percent + " %)";
    text.textContent = run.pages_done + " / " + expected + " pages" + percent;
    status.textContent = run.status_display;
    status.className = "k-" + run.status + "-text";
    for (const element of document.querySelectorAll("[data-counter]")) {
      const name = element.dataset.counter;
      if (name in run) {
        element.textContent = run[name];
      }
    }
    // Whether the outcomes add up to fetched is the server's answer (ingestion/charts.py), not recomputed here.
    document.getElementById("run-invariant").dataset.addsUp = String(run.adds_up);
    verdict.textContent = run.adds_up ? "✓ adds up" : "✗ does not add up";
    bar.dataset.active = String(run.active);
  }

  function refresh() {
    fetch(bar.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (run) {
        if (run) {
          show(run);
        }
        if (!run || run.active) {
          window.setTimeout(refresh, interval);
        }
      })
      .catch(function () { window.setTimeout(refresh, interval); });
  }

  window.setTimeout(refresh, interval);
});
