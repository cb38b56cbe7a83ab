// facesetd review pages: refresh the page's content when the event log grows (server-sent events, or polling
// where EventSource is missing or the stream drops), unless a person is choosing or typing; and keep a clicked
// button from being sent twice.
(function () {
  "use strict";
  var body = document.body;
  var shown = body.getAttribute("data-head");
  var busy = false;

  // a person choosing or typing (a field focused, a box ticked, a move form open): wait, or the new content
  // would take their choice away
  function editing() {
    var a = document.activeElement;
    return (a && a.form) || document.querySelector("main input[type=checkbox]:checked, main details[open]");
  }

  function refresh(head) {
    if (busy || String(head) === shown) return;
    if (editing()) { setTimeout(function () { refresh(head); }, 2000); return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var main = doc.querySelector("main");
        if (main) document.querySelector("main").replaceWith(main);
        var head = doc.querySelector("header .head");
        if (head) document.querySelector("header .head").replaceWith(head);
        shown = doc.body.getAttribute("data-head");
        body.setAttribute("data-head", shown);
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () { busy = false; });
  }

  function poll() {
    setInterval(function () {
      fetch(body.getAttribute("data-poll"), { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (j) { refresh(j.head); })
        .catch(function () {});
    }, 3000);
  }

  if (window.EventSource && body.getAttribute("data-stream")) {
    var stream = new EventSource(body.getAttribute("data-stream"));
    stream.onmessage = function (e) { refresh(e.data); };
    var failures = 0;
    stream.onerror = function () {
      var live = document.getElementById("live");
      if (live) live.className = "stale";
      if (++failures > 5) { stream.close(); poll(); }
    };
    stream.onopen = function () { failures = 0; var live = document.getElementById("live"); if (live) live.className = ""; };
  } else if (body.getAttribute("data-poll")) {
    poll();
  }

  document.addEventListener("submit", function (e) {
    var button = e.submitter || e.target.querySelector("button");
    if (button) { setTimeout(function () { button.disabled = true; button.textContent = "…"; }, 0); }
  });
})();
