// ductile dashboard: live updates over the event stream, countdowns. No library.
// Without this script every page still works: it only spares the reloads.
(function () {
  "use strict";
  var KINDS = ["job.queued", "job.started", "job.succeeded", "job.failed", "job.retrying", "job.dead",
    "job.cancelled", "breaker.opened", "breaker.closed", "schedule.fired", "schedule.skipped",
    "config.reloaded", "config.rejected", "plugin.refused"];
  var pending = null, busy = false, again = false;

  function refresh() {
    pending = null;
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live && !live.contains(document.activeElement)) {
          var open = Array.prototype.map.call(live.querySelectorAll("details"), function (d) { return d.open; });
          live.innerHTML = fresh.innerHTML;
          live.querySelectorAll("details").forEach(function (d, i) { if (i < open.length) { d.open = open[i]; } });
          document.body.dataset.updated = String(Date.now());
          showCopy();
        }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; soon(); } });
  }

  function soon() { if (pending === null) { pending = setTimeout(refresh, 200); } }

  function span(s) {
    s = Math.floor(Math.abs(s));
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m"; }
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }

  function tick() {
    document.querySelectorAll("time[data-countdown]").forEach(function (t) {
      var d = (Date.parse(t.getAttribute("datetime")) - Date.now()) / 1000;
      t.textContent = d >= 0 ? "in " + span(d) : span(d) + " ago";
    });
  }

  function copying(event) {
    var button = event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(button.dataset.copy).then(function () { button.textContent = "Copied"; });
  }

  function showCopy() {
    if (!navigator.clipboard) { return; }
    document.querySelectorAll("button[data-copy]").forEach(function (b) { b.hidden = false; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setInterval(tick, 1000);
    showCopy();
    document.addEventListener("click", copying);
    var url = document.body.dataset.events;
    if (!url || !window.EventSource) { return; }
    var state = document.getElementById("live-state");
    var source = new EventSource(url);
    source.onopen = function () { if (state) { state.classList.add("on"); } document.body.dataset.live = "on"; };
    source.onerror = function () { if (state) { state.classList.remove("on"); } };
    KINDS.forEach(function (kind) { source.addEventListener(kind, soon); });
  });
})();
