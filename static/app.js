// sesrelay's pages: the live list. Plain JavaScript, no build step, nothing loaded from
// elsewhere. On the list's unfiltered first page (#messages with data-live="true"), each
// message the relay captures arrives as a Server-Sent Event from /api/v1/events (its id
// the message's); its row, rendered by the server as the list's own rows are
// (/message/<id>/row), is put on top without a reload.
"use strict";

(function () {
  function startLive(table) {
    if (!window.EventSource) { return; }
    var body = table.tBodies[0];
    var status = document.getElementById("live");
    var seen = {};
    Array.prototype.forEach.call(body.rows, function (tr) { seen[tr.dataset.id] = true; });

    function show(id) {
      if (!id || seen[id]) { return; }
      seen[id] = true;
      fetch("/message/" + encodeURIComponent(id) + "/row", { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : ""; })
        .then(function (html) {
          if (!html) { return; }
          var holder = document.createElement("tbody");
          holder.innerHTML = html.trim();
          var tr = holder.querySelector("tr");
          if (!tr) { return; }
          tr.classList.add("new");
          body.insertBefore(tr, body.firstChild);
          var empty = document.getElementById("empty");
          if (empty) { empty.remove(); }
          var total = document.getElementById("total");
          if (total) { total.textContent = String(Number(total.textContent || "0") + 1); }
        })
        .catch(function () { delete seen[id]; });
    }

    var source = new EventSource("/api/v1/events");
    source.addEventListener("open", function () {
      if (status) { status.classList.add("on"); status.textContent = "live"; }
    });
    source.addEventListener("error", function () {
      if (status) { status.classList.remove("on"); status.textContent = "reconnecting…"; }
    });
    source.addEventListener("message", function (event) { show(event.lastEventId); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("messages");
    if (table && table.dataset.live === "true") { startLive(table); }
  });
})();
