// The Live page: decisions as the history records them, from
// /api/v1/events (Server-Sent Events). Every value goes in with
// textContent, never as markup: caller names are the caller's own text.
"use strict";
(function () {
  const MAX_ROWS = 200;
  const body = document.querySelector("#live tbody");
  const status = document.getElementById("status");
  const pauseButton = document.getElementById("pause");
  const rows = new Map();
  let paused = false;
  let held = [];

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function response(r) {
    if (r.response_code) return r.response_code + " (sipsentry)";
    if (r.final_code) return r.final_code + " after " + r.final_ms + " ms";
    return "…";
  }

  function sources(r) {
    const names = (r.evidence || []).map(function (e) { return e.source; });
    return names.filter(function (n, i) { return names.indexOf(n) === i; }).join(", ");
  }

  function show(r) {
    const tr = document.createElement("tr");
    tr.className = "action-" + r.action;
    tr.dataset.decision = r.decision_id;
    const time = cell(tr, "");
    const link = document.createElement("a");
    link.href = "/history/" + encodeURIComponent(r.decision_id);
    link.textContent = r.time;
    time.appendChild(link);
    cell(tr, r.caller_e164 || r.caller);
    cell(tr, r.display, "name");
    cell(tr, r.called);
    cell(tr, r.action + (r.dry_run ? " (dry run)" : ""), "action");
    cell(tr, r.rule);
    cell(tr, r.score, "num");
    cell(tr, sources(r));
    const resp = cell(tr, response(r), "response");
    rows.set(r.decision_id, resp);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_ROWS) {
      const last = body.rows[body.rows.length - 1];
      rows.delete(last.dataset.decision);
      last.remove();
    }
  }

  function finalResponse(f) {
    const resp = rows.get(f.decision_id);
    if (resp) resp.textContent = f.final_code + " after " + f.final_ms + " ms";
  }

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      held.forEach(function (ev) { ev(); });
      held = [];
    }
    status.textContent = paused ? "paused" : "live";
  });

  function handle(fn) {
    if (paused) {
      held.push(fn);
      if (held.length > MAX_ROWS) held.shift();
      status.textContent = "paused (" + held.length + " waiting)";
    } else {
      fn();
    }
  }

  const source = new EventSource("/api/v1/events");
  source.addEventListener("open", function () { if (!paused) status.textContent = "live"; });
  source.addEventListener("error", function () { status.textContent = "reconnecting…"; });
  source.addEventListener("decision", function (e) {
    const r = JSON.parse(e.data);
    handle(function () { show(r); });
  });
  source.addEventListener("final", function (e) {
    const f = JSON.parse(e.data);
    handle(function () { finalResponse(f); });
  });
})();
