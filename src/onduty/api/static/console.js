// onduty console: live refresh over server-sent events, keyboard shortcuts, and the few
// writes (approve, deny, acknowledge, autonomy) sent to the JSON API with fetch.
// The sign-in token is an HttpOnly cookie: this script never sees it. Every call carries
// X-Onduty-Console: 1 and is same-origin (the API checks the Origin of cookie-borne writes).
(function () {
  "use strict";

  var HEADERS = { "X-Onduty-Console": "1" };
  var page = document.body.getAttribute("data-page");
  var liveState = "connecting";
  var selectedKey = null;
  var pendingG = 0;
  var regions = [];

  // ------------------------------------------------------------------ time

  function age(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    seconds = seconds % 60;
    if (minutes < 60) {
      return minutes < 10 ? minutes + "m " + (seconds < 10 ? "0" : "") + seconds + "s" : minutes + "m";
    }
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 24) return hours + "h " + (minutes < 10 ? "0" : "") + minutes + "m";
    return Math.floor(hours / 24) + "d " + (hours % 24) + "h";
  }

  // The service's clock, not the browser's: the page carries the service's "now" and speed
  // (the header's #clock, refreshed with every event), and the script advances it at that
  // speed: the wall clock, or a simulation's time running `speed` times faster.
  var clock = null;

  function readClock() {
    var el = document.getElementById("clock");
    if (!el) return;
    var stamped = el.getAttribute("data-clock-now");
    if (clock && clock.stamped === stamped) return; // the same reading: keep advancing it
    var at = Date.parse(stamped);
    var speed = parseFloat(el.getAttribute("data-clock-speed"));
    if (isNaN(at)) return;
    clock = { at: at, real: performance.now(), speed: speed > 0 ? speed : 1, stamped: stamped };
  }

  function serviceNow() {
    if (!clock) return Date.now();
    return clock.at + (performance.now() - clock.real) * clock.speed;
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function stamp(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) + " " +
      two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds()) + " UTC";
  }

  function tick() {
    var now = serviceNow();
    document.querySelectorAll("time[data-clock-text]").forEach(function (el) {
      el.textContent = stamp(now);
    });
    document.querySelectorAll("time[data-age]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = age((now - at) / 1000) + (el.getAttribute("data-suffix") || "");
    });
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = age((at - now) / 1000);
    });
  }

  // ------------------------------------------------------------------ toasts

  var toastTimer = 0;
  function toast(text, tone) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.className = "toast shown" + (tone ? " toast-" + tone : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.className = "toast"; }, tone === "bad" ? 8000 : 4000);
  }

  // ------------------------------------------------------------------ fragments

  function Region(el) {
    this.el = el;
    this.url = el.getAttribute("data-fragment");
    this.incident = el.getAttribute("data-incident");
    this.delay = parseInt(el.getAttribute("data-refresh-delay") || "120", 10) || 120;
    this.busy = false;
    this.again = false;
    this.timer = 0;
  }

  Region.prototype.wants = function (message) {
    return !this.incident || !message || !message.incident_id || message.incident_id === this.incident;
  };

  Region.prototype.schedule = function (delay) {
    var self = this;
    if (self.timer) return;
    self.timer = setTimeout(function () { self.timer = 0; self.refresh(); }, delay);
  };

  Region.prototype.refresh = function () {
    var self = this;
    if (self.busy) { self.again = true; return; }
    self.busy = true;
    fetch(self.url, { headers: HEADERS, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          location.assign("/signin?next=" + encodeURIComponent(location.pathname));
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) self.swap(html); })
      .catch(function () { /* offline: the next message or reconnect tries again */ })
      .then(function () {
        self.busy = false;
        if (self.again) { self.again = false; self.schedule(50); }
      });
  };

  Region.prototype.swap = function (html) {
    // An autonomy selector being changed stays as it is until its call is answered.
    if (this.last === html || this.el.querySelector("select[data-busy]")) return;
    this.last = html;
    var hadFocus = this.el.contains(document.activeElement) && document.activeElement !== document.body;
    var focusedKey = hadFocus && document.activeElement.closest("[data-key]");
    focusedKey = focusedKey ? focusedKey.getAttribute("data-key") : null;
    var scroll = window.scrollY;
    this.el.innerHTML = html;
    window.scrollTo(0, scroll);
    readClock();
    applyLive();
    tick();
    restoreSelection(focusedKey !== null);
  };

  function refreshAll(delay) {
    regions.forEach(function (region) { region.schedule(delay); });
  }

  // ------------------------------------------------------------------ live

  function applyLive() {
    var el = document.getElementById("live");
    if (!el) return;
    el.setAttribute("data-state", liveState);
    el.textContent = liveState === "live" ? "live" : liveState === "offline" ? "reconnecting" : "connecting";
  }

  function connect() {
    if (!window.EventSource || page === "signin") return;
    var source = new EventSource("/events/stream");
    source.addEventListener("open", function () {
      liveState = "live";
      applyLive();
      refreshAll(0); // whatever happened while disconnected
    });
    source.addEventListener("error", function () {
      liveState = "offline";
      applyLive();
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    });
    source.addEventListener("message", function (event) {
      var message = null;
      try { message = JSON.parse(event.data); } catch (e) { message = null; }
      regions.forEach(function (region) { if (region.wants(message)) region.schedule(region.delay); });
    });
    source.addEventListener("resync", function () { refreshAll(0); });
  }

  // ------------------------------------------------------------------ selection

  function items() {
    return Array.prototype.slice.call(document.querySelectorAll("main [data-nav-item]"));
  }

  function select(el, focus) {
    items().forEach(function (item) { item.classList.remove("selected"); });
    if (!el) { selectedKey = null; return; }
    el.classList.add("selected");
    selectedKey = el.getAttribute("data-key");
    if (focus) {
      if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
      el.focus({ preventScroll: true });
      el.scrollIntoView({ block: "nearest" });
    }
  }

  function selected() {
    if (selectedKey === null) return null;
    return items().filter(function (item) { return item.getAttribute("data-key") === selectedKey; })[0] || null;
  }

  function restoreSelection(focus) {
    if (selectedKey === null) return;
    var el = selected();
    if (el) select(el, focus);
  }

  function move(step) {
    var list = items();
    if (!list.length) return;
    var index = list.indexOf(selected());
    index = index < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, index + step));
    select(list[index], true);
  }

  // ------------------------------------------------------------------ writes

  function errorText(response, body) {
    var reason = body && (body.error || body.detail);
    if (typeof reason !== "string") reason = JSON.stringify(reason || "");
    if (response.status === 401) return "Sign in first.";
    if (response.status === 403) return "Not allowed: " + (reason || "your token lacks the role");
    return "Refused (" + response.status + ")" + (reason ? ": " + reason : "");
  }

  function call(method, url, body, done) {
    var headers = { "Content-Type": "application/json" };
    Object.keys(HEADERS).forEach(function (key) { headers[key] = HEADERS[key]; });
    return fetch(url, {
      method: method,
      headers: headers,
      credentials: "same-origin",
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
        if (response.ok) {
          // a request still waiting for more people says where it stands ("1 of 2: ...")
          var status = parsed && typeof parsed.status === "string" ? parsed.status : "";
          var message = done || "Done";
          if (parsed && parsed.pending && status) message = status;
          else if (parsed && parsed.outcome === "pending" && status) message += ": " + status;
          toast(message, "good");
          refreshAll(0);
          return true;
        }
        toast(errorText(response, parsed), "bad");
        return false;
      });
    }, function () {
      toast("onduty did not answer: try again", "bad");
      return false;
    });
  }

  function press(button) {
    if (!button || button.disabled) return;
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    var body = {};
    try { body = JSON.parse(button.getAttribute("data-body") || "{}"); } catch (e) { body = {}; }
    call(button.getAttribute("data-call"), button.getAttribute("data-url"), body, button.getAttribute("data-done"))
      .then(function () { button.disabled = false; });
  }

  function answer(which) {
    var item = selected();
    if (!item || !item.hasAttribute("data-approval")) {
      item = document.querySelector("main [data-approval]");
      if (!item) { toast("Nothing waits for an answer here.", null); return; }
      select(item, true);
    }
    var button = item.querySelector(which === "approve" ? "[data-approve]" : "[data-deny]");
    if (!button) { toast("Only an approver can answer approvals.", "bad"); return; }
    press(button);
  }

  function changeAutonomy(selectEl) {
    var name = selectEl.getAttribute("data-autonomy");
    var previous = selectEl.getAttribute("data-current");
    var level = selectEl.value;
    if (level === previous) return;
    if (!window.confirm("Set the autonomy of " + name + " to " + level + "?")) {
      selectEl.value = previous;
      return;
    }
    selectEl.setAttribute("data-busy", "1");
    call("PUT", "/api/v1/services/" + encodeURIComponent(name) + "/autonomy", { level: level },
      name + " is now " + level).then(function (ok) {
      selectEl.removeAttribute("data-busy");
      if (ok) {
        selectEl.setAttribute("data-current", level);
      } else {
        selectEl.value = previous;
      }
      refreshAll(0);
    });
  }

  // ------------------------------------------------------------------ keys and clicks

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function toggleHelp() {
    var dialog = document.getElementById("help");
    if (!dialog) return;
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var dialog = document.getElementById("help");
    if (dialog && dialog.open && event.key !== "?") return;
    var key = event.key;
    if (pendingG && Date.now() - pendingG < 1500) {
      pendingG = 0;
      var to = { i: "/", a: "/approvals", s: "/services", h: "/history", m: "/silences", o: "/shift" }[key];
      if (to) { event.preventDefault(); location.assign(to); return; }
    }
    pendingG = 0;
    if (key === "j") { event.preventDefault(); move(1); }
    else if (key === "k") { event.preventDefault(); move(-1); }
    else if (key === "Enter") {
      var el = selected();
      var tag = event.target && event.target.tagName ? event.target.tagName.toLowerCase() : "";
      if (el && el.getAttribute("data-href") && tag !== "a" && tag !== "button") {
        event.preventDefault();
        location.assign(el.getAttribute("data-href"));
      }
    }
    else if (key === "a") { event.preventDefault(); answer("approve"); }
    else if (key === "d") { event.preventDefault(); answer("deny"); }
    else if (key === "[" || key === "]") {
      // an incident's signals, or the history: the earlier or the later page
      var pager = document.querySelector('main a[data-pager="' + (key === "[" ? "prev" : "next") + '"]');
      if (pager) { event.preventDefault(); location.assign(pager.getAttribute("href")); }
    }
    else if (key === "?") { event.preventDefault(); toggleHelp(); }
    else if (key === "g") { pendingG = Date.now(); }
    else if (key === "r") { event.preventDefault(); refreshAll(0); toast("Refreshed", null); }
    else if (key === "Escape") { select(null, false); }
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    var button = target.closest("[data-call]");
    if (button) { event.preventDefault(); press(button); return; }
    if (target.closest("[data-help]")) { toggleHelp(); return; }
    var row = target.closest(".incident[data-href]");
    if (row && !target.closest("a, button, select")) {
      select(row, false);
      location.assign(row.getAttribute("data-href"));
    }
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el && el.matches && el.matches("select[data-autonomy]")) changeAutonomy(el);
  });

  // ------------------------------------------------------------------ start

  document.querySelectorAll("[data-fragment]").forEach(function (el) { regions.push(new Region(el)); });
  // a region that changes between events (a drill's fleet) is also re-fetched every data-poll ms
  regions.forEach(function (region) {
    var every = parseInt(region.el.getAttribute("data-poll") || "0", 10);
    if (every > 0) setInterval(function () { region.schedule(0); }, every);
  });
  readClock();
  applyLive();
  tick();
  setInterval(tick, clock && clock.speed > 1 ? 250 : 1000);
  connect();
})();
