/*! Beacon browser snippet. <script defer src=".../sdk/beacon.js" data-site-id="…"></script>
 * Loads the wasm tracker, hands it the page's events, and never throws into the page. */
(function () {
  var w = window, d = document, script = d.currentScript;
  var existing = w.beacon;
  var pending = (existing && existing.q) || [];
  var tracker = null, dead = false;

  function warn(message, error) {
    try { console.warn("beacon: " + message, error || ""); } catch (_) {}
  }
  // Every call into wasm goes through here: a failure disables tracking, never the page.
  function call(name, args) {
    if (dead) return;
    if (!tracker) { if (pending.length < 100) pending.push([name, args || []]); return; }
    try { return tracker[name].apply(tracker, args || []); }
    catch (e) { dead = true; warn("disabled after an error", e); }
  }

  var settle;
  w.beacon = {
    // Resolves once the tracker is loaded: true if this visit is tracked.
    ready: new Promise(function (resolve) { settle = resolve; }),
    track: function (type, props) { call("track", [String(type), props === undefined ? null : props]); },
    pageView: function () { call("page_view"); },
    optOut: function () { call("opt_out"); },
    optIn: function () { call("opt_in"); }
  };
  if (!script || !script.src) { settle(false); return warn("load me with <script src=…>"); }

  // Where this page load came from: another host's referrer (scheme, host and path; its
  // query may carry personal data) and the URL's utm_* tags, each only if the server
  // would take it (at most 2048 and 256 bytes, no control characters).
  function arrival() {
    var a = {}, fits = function (v, max) {
      return v && new TextEncoder().encode(v).length <= max && !/[\x00-\x1f\x7f-\x9f]/.test(v);
    };
    try {
      var r = new URL(d.referrer), here = w.location;
      if (/^https?:$/.test(r.protocol) && r.host !== here.host && fits(r.origin + r.pathname, 2048)) {
        a.referrer = r.origin + r.pathname;
      }
      new URLSearchParams(here.search).forEach(function (v, k) {
        if (/^utm_(source|medium|campaign|content|term)$/.test(k) && fits(v, 256)) a[k] = v;
      });
    } catch (_) {}
    return a;
  }

  var base = script.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  var version = "__BEACON_VERSION__";
  import(base + "beacon_wasm.js?v=" + version)
    .then(function (wasm) {
      return wasm.default({ module_or_path: base + "beacon_wasm_bg.wasm?v=" + version })
        .then(function () { tracker = wasm.start(script, arrival()); });
    })
    .then(function () {
      var history = w.history;
      ["pushState", "replaceState"].forEach(function (method) {
        var original = history[method];
        if (typeof original !== "function") return;
        history[method] = function () {
          var result = original.apply(this, arguments);
          call("navigated");
          return result;
        };
      });
      w.addEventListener("popstate", function () { call("navigated"); });
      var hashRouting = script.getAttribute("data-hash-routing");
      if (hashRouting !== null && !/^\s*(false|0|no|off)\s*$/.test(hashRouting)) {
        w.addEventListener("hashchange", function () { call("navigated"); });
      }
      d.addEventListener("click", function (e) { call("click", [e.target]); }, true);
      d.addEventListener("auxclick", function (e) { if (e.button === 1) call("click", [e.target]); }, true);
      d.addEventListener("visibilitychange", function () {
        if (d.visibilityState === "hidden") call("flush", [true]);
      });
      w.addEventListener("pagehide", function () { call("flush", [true]); });
      var queued = pending; pending = [];
      queued.forEach(function (c) { call(c[0], c[1]); });
      settle(!!call("tracking"));
    })
    .catch(function (e) { dead = true; warn("not started", e); settle(false); });
})();
