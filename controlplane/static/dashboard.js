// Berth dashboard: progressive enhancement only; every page works without it.
// - live regions: [data-live-src] is re-fetched when the server-sent event stream says
//   its stack changed (and after a reconnect, to catch up on what was missed);
// - the run/build log of a service page is appended to from "log" events;
// - the connection state is shown in the top bar; the stream reconnects by itself;
// - relative times (<time data-rel>) tick; copy buttons; confirm dialogs; toggles.
(function () {
  "use strict";
  var body = document.body;
  var statusEl = document.getElementById("live-status");

  function rel(iso) {
    var s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    var a = Math.abs(s), t;
    if (a < 60) t = a + " s";
    else if (a < 3600) t = Math.floor(a / 60) + " min";
    else if (a < 86400) t = Math.floor(a / 3600) + " h";
    else t = Math.floor(a / 86400) + " d";
    return s < 0 ? "in " + t : t + " ago";
  }
  function tick() {
    document.querySelectorAll("time[data-rel]").forEach(function (el) {
      var iso = el.getAttribute("datetime");
      if (iso) el.textContent = rel(iso);
    });
  }
  setInterval(tick, 1000);

  function setStatus(state, text) {
    if (!statusEl) return;
    statusEl.hidden = false;
    statusEl.className = "live-status is-" + state;
    statusEl.textContent = text;
    body.setAttribute("data-live-state", state);
  }

  var refreshing = {};
  function refreshRegions() {
    document.querySelectorAll("[data-live-src]").forEach(function (region) {
      var src = region.getAttribute("data-live-src");
      if (refreshing[src]) { refreshing[src] = "again"; return; }
      refreshing[src] = true;
      fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (resp) {
          if (resp.status === 401) { setStatus("lost", "Session expired — log in again"); return null; }
          return resp.ok ? resp.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== region.innerHTML) {
            // keep keyboard focus where it was if the focused element survives by id
            var active = document.activeElement && region.contains(document.activeElement) ? document.activeElement.id : null;
            region.innerHTML = html;
            if (active && document.getElementById(active)) document.getElementById(active).focus();
            tick();
          }
        })
        .catch(function () {})
        .then(function () {
          var again = refreshing[src] === "again";
          refreshing[src] = false;
          if (again) refreshRegions();
        });
    });
  }

  var buildCommit = null;
  function appendLog(msg) {
    var id = msg.stream === "build" ? "build-log" : "run-log";
    var pre = document.getElementById(id);
    if (!pre) return;
    if (msg.stream === "build" && msg.commit !== buildCommit) {
      pre.textContent = "";  // a new build: its log replaces the previous one
      buildCommit = msg.commit;
      var label = document.getElementById("build-commit");
      if (label) label.textContent = msg.commit ? "commit " + msg.commit.slice(0, 12) : "";
    }
    pre.appendChild(document.createTextNode(msg.data));
    var follow = document.getElementById("follow");
    if (msg.stream === "build" || !follow || follow.checked) pre.scrollTop = pre.scrollHeight;
    body.setAttribute("data-log-after", String(msg.seq));
  }

  function connect() {
    if (!body.hasAttribute("data-live-stack")) return;
    var url = "/live?stack=" + encodeURIComponent(body.getAttribute("data-live-stack"));
    var logs = body.getAttribute("data-live-logs");
    if (logs) url += "&logs=" + encodeURIComponent(logs) + "&after=" + encodeURIComponent(body.getAttribute("data-log-after") || "0");
    var es = new EventSource(url);
    var backoff = 1000;
    es.addEventListener("hello", function () {
      setStatus("live", "Live");
      // always: catches what changed between this page's render (or the last
      // connection) and the moment the stream started watching
      refreshRegions();
      backoff = 1000;
    });
    es.addEventListener("change", refreshRegions);
    es.addEventListener("resync", refreshRegions);
    es.addEventListener("log", function (ev) { appendLog(JSON.parse(ev.data)); });
    es.onerror = function () {
      setStatus("lost", "Connection lost — reconnecting…");
      if (es.readyState === EventSource.CLOSED) {
        // the browser gave up (e.g. an HTTP error): retry ourselves, with a fresh `after`
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 15000);
      } else if (logs) {
        // the browser will retry with the same URL; reopen with the newest `after` instead
        es.close();
        setTimeout(connect, 1000);
      }
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    ["build-log", "run-log"].forEach(function (id) {
      var pre = document.getElementById(id);
      if (pre) pre.scrollTop = pre.scrollHeight;
    });
    var buildPre = document.getElementById("build-log");
    if (buildPre) buildCommit = buildPre.getAttribute("data-commit") || null;
    document.addEventListener("click", function (ev) {
      var btn = ev.target.closest("[data-copy]");
      if (!btn) return;
      var src = document.querySelector(btn.getAttribute("data-copy"));
      var out = document.getElementById("copy-status");
      var text = src ? src.textContent : "";
      var done = function () { if (out) out.textContent = "Copied to the clipboard."; btn.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(src); });
      } else { selectText(src); if (out) out.textContent = "Selected: press Ctrl+C to copy."; }
    });
    document.addEventListener("submit", function (ev) {
      var msg = ev.target.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) ev.preventDefault();
    });
    document.querySelectorAll("input[data-toggles]").forEach(function (box) {
      var target = document.getElementById(box.getAttribute("data-toggles"));
      var sync = function () { if (target) target.hidden = !box.checked; };
      box.addEventListener("change", sync);
      sync();
    });
    tick();
    connect();
  });

  function selectText(el) {
    if (!el) return;
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
})();
