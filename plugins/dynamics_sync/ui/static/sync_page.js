// The Sync page's only script: search as you type, and open task runs in the Airflow UI around the frame.
// Without it the page still works: the form submits, the links open in the frame.
(function () {
  "use strict";

  var form = document.getElementById("search");
  var results = document.getElementById("activity-results");
  var sequence = 0;
  var timer = null;

  function params(offset) {
    var out = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (String(value).trim() !== "") out.append(key, String(value).trim());
    });
    if (offset) out.set("offset", String(offset));
    return out;
  }

  // The server renders (and escapes) the rows; the script only swaps its fragment in. The search is
  // POSTed and remembered in the URL's fragment (#...), which no server sees: an email typed here never
  // reaches Airflow's HTTP access log, which records query strings.
  function search(offset) {
    var body = params(offset);
    var mine = ++sequence;
    results.setAttribute("aria-busy", "true");
    fetch("activity", { method: "POST", body: body, credentials: "same-origin", redirect: "manual" })
      .then(function (response) {
        if (!response.ok) { window.location.reload(); return null; } // logged out: the page asks to log in
        return response.text();
      })
      .then(function (html) {
        if (html === null || mine !== sequence) return; // a later search has been sent since
        results.innerHTML = html;
        results.setAttribute("aria-busy", "false");
        var state = body.toString();
        window.history.replaceState(null, "", window.location.pathname + (state ? "#" + state : ""));
      })
      .catch(function () { results.setAttribute("aria-busy", "false"); });
  }

  function soon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { search(0); }, 250);
  }

  // A search remembered in the fragment (a reload, the UI's back button): put it back in the form, run it.
  function restore() {
    var saved = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    if (!saved.has("q") && !saved.has("type") && !saved.has("run_id") && !saved.has("entity") && !saved.has("open")) {
      return;
    }
    ["q", "type", "run_id", "entity"].forEach(function (name) {
      if (form.elements[name]) form.elements[name].value = saved.get(name) || "";
    });
    if (form.elements.open) form.elements.open.checked = saved.get("open") === "1";
    search(Number(saved.get("offset") || 0));
  }

  if (form && results) {
    form.addEventListener("submit", function (event) { event.preventDefault(); window.clearTimeout(timer); search(0); });
    form.addEventListener("input", function (event) {
      if (event.target.matches("input[type=search], #run_id")) soon();
    });
    form.addEventListener("change", function (event) {
      if (event.target.matches("select, input[type=checkbox]")) search(0);
    });
    results.addEventListener("click", function (event) {
      var pager = event.target.closest && event.target.closest("a[data-offset]");
      if (!pager || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      search(Number(pager.getAttribute("data-offset")));
    });
    restore();
  }

  // The UI frames this page in a sandbox without top navigation; a link to a DAG run or a task instance
  // is a route of the UI's own router around the frame, so it is pushed onto the UI's history (same origin)
  // and the router told, exactly as its own links do. Anything unexpected falls back to the plain link.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-top]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    if (window.top === window) return;
    try {
      var top = window.top;
      var url = new URL(link.href);
      if (url.origin !== top.location.origin) return;
      var state = top.history.state;
      var index = state && typeof state.idx === "number" ? state.idx + 1 : 0;
      top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: index }, "",
        url.pathname + url.search + url.hash);
      top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
      event.preventDefault();
    } catch (error) {
      // cross-origin or no history access: let the browser follow the link in the frame
    }
  });
})();
