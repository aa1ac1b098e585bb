/*! Beacon browser snippet. <script defer src=".../sdk/beacon.js" data-site-id="…"></script> */
// Loads the wasm tracker and does the browser's part for it: listening to the page,
// reading the location, localStorage, the clock and randomness, and sending with fetch
// and sendBeacon. The tracker keeps the state and the rules. Nothing here throws into
// the page: every call into the tracker goes through call(), and a failure there
// disables tracking, never the page.
(function () {
  var w = window, d = document, script = d.currentScript, nav = navigator;
  var OPT_OUT = "beacon_opt_out", USER = "beacon_uid";
  // Calls made before the tracker loads: the site's own stub queue (`beacon.q`, of
  // [method, [arguments]]), and this snippet's recordings, kept with their time.
  var stubbed = (w.beacon && w.beacon.q) || [], early = [];
  // The module's exports, and the number of this tag's tracker in it.
  var wasm, tracker = null, dead = false, endpoint, hashRouting, sent = 0, settle;

  function warn(message, detail) {
    try { console.warn("beacon: " + message, detail || ""); } catch (_) {}
  }
  function store(key, value) {
    try {
      var s = w.localStorage;
      return value === undefined ? s.getItem(key) : value === null ? s.removeItem(key) : s.setItem(key, value);
    } catch (_) { return null; }
  }
  function optedOut() { return store(OPT_OUT) === "1"; }
  function random() { return crypto.getRandomValues(new Uint32Array(1))[0]; }
  // The path as the site routes: the pathname, plus the hash when hash-routed. The
  // query string is left out: it often carries personal data.
  function path() { var l = w.location; return l.pathname + (hashRouting ? l.hash : ""); }

  // Calls the module's function `name`. Only numbers and strings cross (see
  // sdk-wasm/src/lib.rs), so this is the whole of the glue, in place of wasm-bindgen's
  // generated file, which would be most of the SDK's JavaScript: a string goes in as a
  // pointer and length of memory from the module's allocator, which the module frees;
  // one comes back as [pointer, length] (pointer 0: none), freed here once read.
  function invoke(name, args) {
    var flat = [], memory = function (at, length) { return new Uint8Array(wasm.memory.buffer, at >>> 0, length); };
    args.forEach(function (a) {
      if (typeof a != "string") return flat.push(+a);
      var bytes = new TextEncoder().encode(a), at = wasm.__wbindgen_malloc(bytes.length, 1);
      memory(at, bytes.length).set(bytes);
      flat.push(at, bytes.length);
    });
    var r = wasm[name].apply(null, flat);
    if (!Array.isArray(r)) return r;
    if (!r[0]) return;
    var text = new TextDecoder().decode(memory(r[0], r[1]));
    wasm.__wbindgen_free(r[0], r[1], 1);
    return text;
  }
  // Calls `name` on this tag's tracker; a failure disables tracking.
  function call(name, args) {
    if (dead || tracker === null) return;
    try { return invoke(name, [tracker].concat(args || [])); }
    catch (e) { dead = true; warn("disabled after an error", e); }
  }
  // Records an event on this page, at this time (kept until the tracker loads); sends
  // if enough waits.
  function record(type, props, keys, navigated) {
    var args = [type, path(), props || "", keys, !!navigated, Date.now()]; // "": no props
    if (tracker === null) { if (early.length < 100) early.push(args); return; }
    add(args);
  }
  function add(args) {
    var due = call("record", args.concat([optedOut(), random(), random(), random()]));
    if (due < 0) warn("event not sent; the problem is in", call("problem"));
    else if (due) flush();
  }

  // Sends what waits. While the page stays, with keepalive fetch (events that fail for a
  // reason that may pass come back to the tracker for the next try); when it is going
  // away, with sendBeacon, which the browser delivers after the page is gone.
  function flush(closing) {
    for (var body, id; (body = call("next_body", [id = ++sent, optedOut()])); ) {
      if (closing && nav.sendBeacon(endpoint, body)) { call("settled", [id, 202]); continue; }
      post(id, body);
    }
  }
  function post(id, body) {
    // A string body goes as text/plain: a "simple" request, with no CORS preflight.
    fetch(endpoint, { method: "POST", body: body, mode: "cors", keepalive: true }).then(
      function (r) { if (call("settled", [id, r.status])) warn("the server refused a batch", r.status); },
      function () { call("settled", [id, 0]); });
  }

  // A click counts on an element marked data-beacon-click (named by the mark, or by its
  // text), or on a link to another site.
  function click(target) {
    var hit = target && target.closest && target.closest("[data-beacon-click],a[href]");
    if (!hit) return;
    var name = hit.getAttribute("data-beacon-click"), props = {};
    if (name !== null) {
      props.name = Array.from((name.trim() || hit.textContent || "").trim()).slice(0, 64).join("");
    } else if (/^https?:$/.test(hit.protocol) && hit.host && hit.host !== w.location.host) {
      props.outbound = hit.href;
    } else return;
    custom("click", props);
  }
  function custom(type, props) {
    var json = null, keys = 0;
    if (props != null) {
      if (typeof props !== "object" || Array.isArray(props)) return warn("track: props must be a plain object; event not sent");
      try { json = JSON.stringify(props); keys = Object.keys(props).length; }
      catch (e) { return warn("track: props cannot be sent", e); }
    }
    record(String(type), json, keys);
  }

  w.beacon = {
    // Resolves once the tracker is loaded: true if this visit is tracked.
    ready: new Promise(function (resolve) { settle = resolve; }),
    track: custom,
    pageView: function () { record("page_view"); },
    optOut: function () { store(OPT_OUT, "1"); call("clear"); },
    optIn: function () { store(OPT_OUT, null); }
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
    return JSON.stringify(a);
  }

  var base = script.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  fetch(base + "beacon.wasm?v=__BEACON_VERSION__")
    .then(function (r) { return r.arrayBuffer(); })
    .then(function (bytes) { return WebAssembly.compile(bytes); })
    .then(function (module) {
      // The module imports wasm-bindgen's helpers for what never crosses here (thrown
      // errors, JavaScript references): each is given a function that does nothing, and
      // a Rust panic still stops the module, since it traps.
      var imports = {};
      WebAssembly.Module.imports(module).forEach(function (i) {
        (imports[i.module] = imports[i.module] || {})[i.name] = function () {};
      });
      return WebAssembly.instantiate(module, imports);
    })
    .then(function (instance) {
      wasm = instance.exports;
      wasm.__wbindgen_start();
      // The visit's facts, then the tag's attributes (a fact wins over an attribute of
      // its name), as name NUL value NUL pairs; a value holding a NUL is left out.
      var l = w.location, facts = "", fact = function (name, value) {
        if (value != null && String(value).indexOf("\0") < 0) facts += name + "\0" + value + "\0";
      };
      fact("src", script.src); fact("hostname", l.hostname); fact("protocol", l.protocol);
      fact("uid", store(USER)); fact("arrival", arrival());
      fact("dnt", nav.doNotTrack == "1" ? "1" : null); fact("gpc", nav.globalPrivacyControl ? "1" : null);
      Array.prototype.forEach.call(script.attributes, function (a) { fact(a.name, a.value); });
      var t = invoke("start", [facts, random(), random(), random(), random()]);
      if (t < 0) throw invoke("problem", []);
      tracker = t;
    })
    .then(function () {
      endpoint = call("endpoint");
      hashRouting = call("hash_routing");
      var id = call("user_id");
      if (id) store(USER, id);
      // The page view of the load goes at once: a visit that ends before the first tick
      // and without pagehide (a killed mobile tab) still counts, and shows in realtime.
      record("page_view");
      flush();
      var history = w.history, navigated = function () { record("page_view", null, 0, true); };
      ["pushState", "replaceState"].forEach(function (method) {
        var original = history[method];
        if (typeof original !== "function") return;
        history[method] = function () {
          var result = original.apply(this, arguments);
          navigated();
          return result;
        };
      });
      w.addEventListener("popstate", navigated);
      if (hashRouting) w.addEventListener("hashchange", navigated);
      d.addEventListener("click", function (e) { click(e.target); }, true);
      d.addEventListener("auxclick", function (e) { if (e.button === 1) click(e.target); }, true);
      d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") flush(true); });
      w.addEventListener("pagehide", function () { flush(true); });
      setInterval(flush, call("flush_ms") >>> 0);
      early.forEach(add);
      stubbed.forEach(function (c) { try { w.beacon[c[0]].apply(null, c[1] || []); } catch (_) {} });
      settle(!!call("tracking", [optedOut()]));
    })
    .catch(function (e) { dead = true; warn("not started", e); settle(false); });
})();
