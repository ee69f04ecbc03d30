// sesrelay's pages: the live list. Plain JavaScript, no build step, nothing loaded from
// elsewhere. The list page's table (#messages) gets a row for each message the relay
// captures, from the Server-Sent Events at /api/v1/events, without a reload.
"use strict";

(function () {
  function text(tag, value, className) {
    var el = document.createElement(tag);
    if (className) { el.className = className; }
    el.textContent = value == null ? "" : String(value);
    return el;
  }

  function outcomeBadge(outcome) {
    var cls = outcome === "forwarded" ? "ok" : outcome === "rejected" ? "bad" : "warn";
    return text("span", outcome, "badge " + cls);
  }

  var SOURCES = {
    "header": "header",
    "api-parameter": "API parameter",
    "address-default": "address default",
    "domain-default": "domain default",
    "none": "none"
  };

  function formatTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return iso || ""; }
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  // One row, as the server renders them (templates/list.html).
  function row(m) {
    var ses = m.SES || {};
    var tr = document.createElement("tr");
    tr.className = "new";
    tr.dataset.id = m.ID;
    tr.appendChild(text("td", formatTime(m.Created), "nowrap mono"));
    var outcome = document.createElement("td");
    outcome.appendChild(outcomeBadge(ses.Outcome || ""));
    tr.appendChild(outcome);
    tr.appendChild(text("td", (m.From && (m.From.Address || m.From)) || ""));
    var to = (m.To || []).map(function (t) { return t.Address || t; }).join(", ");
    tr.appendChild(text("td", to));
    var subject = document.createElement("td");
    var link = document.createElement("a");
    link.href = "/message/" + encodeURIComponent(m.ID);
    link.textContent = m.Subject || "(no subject)";
    subject.appendChild(link);
    tr.appendChild(subject);
    var set = ses.ConfigurationSet ? ses.ConfigurationSet : "no set";
    var source = SOURCES[ses.ConfigurationSetSource] || ses.ConfigurationSetSource || "";
    tr.appendChild(text("td", set + " · " + source, "nowrap"));
    return tr;
  }

  function startLive(table) {
    if (!window.EventSource) { return; }
    var body = table.tBodies[0];
    var status = document.getElementById("live");
    var source = new EventSource("/api/v1/events");
    source.onopen = function () {
      if (status) { status.classList.add("on"); status.textContent = "live"; }
    };
    source.onerror = function () {
      if (status) { status.classList.remove("on"); status.textContent = "reconnecting…"; }
    };
    source.addEventListener("message", function (event) {
      var m;
      try { m = JSON.parse(event.data); } catch (e) { return; }
      if (!m || !m.ID || body.querySelector('tr[data-id="' + CSS.escape(m.ID) + '"]')) { return; }
      var empty = document.getElementById("empty");
      if (empty) { empty.remove(); }
      body.insertBefore(row(m), body.firstChild);
      var count = document.getElementById("total");
      if (count) { count.textContent = String(Number(count.textContent || "0") + 1); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("messages");
    // Live only on the unfiltered first page: a filtered list would need the search's rules.
    if (table && table.dataset.live === "true") { startLive(table); }
  });
})();
