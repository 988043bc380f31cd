// The console's Now page: poll now.json every few seconds and redraw the figures and the
// route and key tables in place; rates are the change between two polls.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  var box = document.getElementById("now");
  if (!box) { return; }
  var url = box.getAttribute("data-now-url");
  var last = null;

  function put(name, value) {
    var nodes = document.querySelectorAll('[data-now="' + name + '"]');
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = String(value); }
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    td.textContent = text === null || text === undefined ? "—" : String(text);
    row.appendChild(td);
    return td;
  }

  function status(row, state) {
    var td = document.createElement("td");
    var span = document.createElement("span");
    span.className = "status " + (state === "serving" ? "status-ok" : "status-bad");
    span.textContent = state;
    td.appendChild(span);
    row.appendChild(td);
  }

  function table(name, items, draw) {
    var body = document.querySelector('[data-now="' + name + '"]');
    if (!body) { return; }
    var rows = document.createDocumentFragment();
    items.forEach(function (item) {
      var row = document.createElement("tr");
      draw(row, item);
      rows.appendChild(row);
    });
    body.replaceChildren(rows);
  }

  function show(state, seconds) {
    put("at", state.at);
    put("open_streams", state.open_streams);
    put("open_holds", state.open_holds);
    put("requests", state.requests);
    put("errors", state.errors);
    if (last && seconds > 0) {
      put("rate", ((state.requests - last.requests) / seconds).toFixed(2));
      put("error_rate", ((state.errors - last.errors) / seconds).toFixed(2));
    }
    table("routes", state.routes, function (row, r) {
      cell(row, r.model); cell(row, r.route); cell(row, r.provider); status(row, r.state);
      cell(row, r.resting_until); cell(row, r.recent_failures, "num");
      cell(row, r.latency_ms.p50, "num"); cell(row, r.latency_ms.p90, "num");
    });
    table("keys", state.keys, function (row, k) {
      cell(row, k.provider);
      var td = cell(row, "");
      var code = document.createElement("code");
      code.textContent = k.key;
      td.replaceChildren(code);
      status(row, k.state); cell(row, k.resting_until);
    });
  }

  function poll() {
    var started = Date.now();
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (answer) {
        if (answer.status === 401) { window.location.reload(); throw new Error("signed out"); }
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.json();
      })
      .then(function (state) {
        var seconds = last ? (started - last.started) / 1000 : 0;
        show(state, seconds);
        last = { requests: state.requests, errors: state.errors, started: started };
        box.setAttribute("data-polls", String(Number(box.getAttribute("data-polls") || 0) + 1));
      })
      .catch(function () { /* keep the last figures; the next poll tries again */ })
      .then(function () { window.setTimeout(poll, PERIOD_MS); });
  }

  poll();
}());
