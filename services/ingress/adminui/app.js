// The orderd operator page. It keeps the admin token in sessionStorage (this
// tab only), reads GET /v1/admin/stream with fetch (EventSource cannot send
// an Authorization header) and renders each snapshot; the switches call the
// admin API. Everything the server sends is shown with textContent, never
// parsed as HTML.
//
// The server ends the stream when the token expires (a last event
// "token_expired"). The page reads the token's exp and, from RENEW_AHEAD_MS
// before it, asks for a fresh token without leaving the dashboard; a fresh
// token pasted then replaces the stream at once, so the numbers never
// stop. A token left to expire stops the stream: the dashboard stays with
// its last numbers, says so, and resumes as soon as a fresh token is
// pasted.
"use strict";

(() => {
  const TOKEN_KEY = "orderd.adminToken";
  const HISTORY_KEY = "orderd.history";
  const WINDOW_MS = 120000; // the chart's last two minutes
  const RENEW_AHEAD_MS = 5 * 60 * 1000; // ask for a fresh token this long before exp
  const EXPIRY_SKEW_MS = 60000; // a 401 this close to exp is the token's expiry
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let controller = null; // aborts the current stream
  let retryTimer = null;
  let expired = false; // the stream stopped because the token expired
  // The chart's points {t (ms), a (accepted/s), d (decided/s)}, kept in
  // sessionStorage so that a reload does not empty the chart.
  let history = [];
  try {
    history = (JSON.parse(sessionStorage.getItem(HISTORY_KEY)) || []).filter((p) => Date.now() - p.t < WINDOW_MS);
  } catch (_) {
    history = [];
  }

  // ---- the token's lifetime ----

  // tokenExpiry returns the exp of a JWT in ms, or null. The payload is
  // read, not verified: the server does that.
  function tokenExpiry(t) {
    try {
      let p = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (p.length % 4) p += "=";
      const exp = JSON.parse(atob(p)).exp;
      return typeof exp === "number" ? exp * 1000 : null;
    } catch (_) {
      return null;
    }
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }

  // tick shows how long the token lasts, and asks for a fresh one when it
  // is about to expire.
  function tick() {
    const el = $("token-expiry");
    const exp = token ? tokenExpiry(token) : null;
    if (!exp || $("dashboard").hidden) {
      el.hidden = true;
      return;
    }
    const left = exp - Date.now();
    el.hidden = false;
    el.textContent = left > 0 ? "token expires in " + duration(left) : "token expired";
    if (left < RENEW_AHEAD_MS) showRenew();
  }
  setInterval(tick, 1000);

  function showRenew() {
    const exp = tokenExpiry(token);
    const at = exp ? new Date(exp).toLocaleTimeString() : "?";
    const text = expired
      ? "Your admin token expired at " + at + ": the numbers below stopped then. Paste a fresh token to carry on."
      : "Your admin token expires at " + at + ". Paste a fresh one now and the live numbers carry on without a gap.";
    if ($("renew-text").textContent !== text) $("renew-text").textContent = text;
    $("renew").hidden = false;
  }

  // onExpired: the stream stopped for the token's expiry.
  function onExpired() {
    stopStream();
    expired = true;
    setStatus("off", "token expired");
    showDashboard();
    showRenew();
    tick();
  }

  $("renew-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("renew-token").value.trim().replace(/^Bearer\s+/i, "");
    if (!t) return;
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("renew-token").value = "";
    start();
  });

  // ---- login ----

  function showLogin(error) {
    stopStream();
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    setStatus("off", "not connected");
    const el = $("login-error");
    el.textContent = error || "";
    el.hidden = !error;
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim().replace(/^Bearer\s+/i, "");
    if (!t) return;
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    start();
  });

  $("logout").addEventListener("click", () => {
    token = "";
    expired = false;
    $("renew").hidden = true;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(HISTORY_KEY);
    history = [];
    showLogin("");
  });

  function setStatus(kind, text) {
    const el = $("status");
    el.className = "status " + kind;
    el.textContent = text;
  }

  // ---- the stream ----

  function stopStream() {
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    if (controller) controller.abort();
    controller = null;
  }

  function start() {
    stopStream();
    expired = false;
    $("renew").hidden = true;
    showDashboard();
    connect();
    tick();
  }

  function retry(why) {
    if (!token) return;
    setStatus("retry", "reconnecting" + (why ? " (" + why + ")" : ""));
    retryTimer = setTimeout(connect, 2000);
  }

  async function problemText(resp) {
    try {
      const p = await resp.json();
      return (p.title || resp.status) + (p.detail ? ": " + p.detail : "");
    } catch (_) {
      return "HTTP " + resp.status;
    }
  }

  async function connect() {
    retryTimer = null;
    const ctrl = new AbortController();
    controller = ctrl;
    setStatus("retry", "connecting");
    let resp;
    try {
      resp = await fetch("/v1/admin/stream", {
        headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
        cache: "no-store",
        signal: ctrl.signal,
      });
    } catch (e) {
      if (!ctrl.signal.aborted) retry("network");
      return;
    }
    if (resp.status === 401 && tokenExpiry(token) !== null && tokenExpiry(token) - Date.now() < EXPIRY_SKEW_MS) {
      onExpired();
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      const text = await problemText(resp);
      token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(resp.status === 403 ? "This token is not an admin's. " + text : "The token was refused. " + text);
      return;
    }
    if (!resp.ok || !resp.body) {
      retry(await problemText(resp));
      return;
    }
    setStatus("live", "live");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let tokenExpired = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (onFrame(frame) === "token_expired") tokenExpired = true;
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (controller !== ctrl) return;
    if (tokenExpired) onExpired();
    else retry("stream ended");
  }

  // onFrame handles one event of the stream and returns its name.
  function onFrame(frame) {
    let event = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith(":")) continue;
      const j = line.indexOf(":");
      const field = j < 0 ? line : line.slice(0, j);
      let val = j < 0 ? "" : line.slice(j + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") event = val;
      else if (field === "data") data.push(val);
    }
    if (event !== "snapshot" || data.length === 0) return event;
    try {
      render(JSON.parse(data.join("\n")));
    } catch (e) {
      console.error("bad snapshot", e);
    }
    return event;
  }

  // ---- rendering ----

  const fmt = new Intl.NumberFormat();
  const num = (n) => fmt.format(n || 0);

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function render(s) {
    setText("accepted-total", num(s.accepted));
    setText("accepted-rate", num(s.accepted_per_s));
    setText("decided-total", num(s.decided));
    setText("decided-rate", num(s.decided_per_s));
    setText("confirmed-total", num(s.confirmed));
    setText("rejected-total", num(s.rejected));
    setText("ingresses", num(s.ingresses));
    setText("updated", new Date(s.time).toLocaleTimeString());
    setText("snapshot-errors", (s.errors || []).join("; "));

    const t = Date.parse(s.time) || Date.now();
    history.push({ t, a: s.accepted_per_s || 0, d: s.decided_per_s || 0 });
    while (history.length && t - history[0].t > WINDOW_MS) history.shift();
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
    } catch (_) {
      // full: the chart still works, without surviving a reload
    }
    drawChart();

    renderSKUs(s.skus || []);
    renderReasons(s.reject_reasons || {});
    renderPartitions(s.partitions || []);
    renderDeadLetters(s.dead_letters || []);
  }

  function renderSKUs(skus) {
    const body = $("skus").tBodies[0];
    $("skus-empty").hidden = skus.length > 0;
    const rows = new Map([...body.rows].map((r) => [r.dataset.sku, r]));
    const keep = new Set();
    skus.forEach((sku, i) => {
      keep.add(sku.id);
      let tr = rows.get(sku.id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.sku = sku.id;
        tr.append(cell("", "name"), cell(sku.id.slice(0, 8), "mono"), cell("", "num stock"), cell("", "num units-sold"));
        const td = document.createElement("td");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "switch pause-switch";
        b.setAttribute("role", "switch");
        b.dataset.sku = sku.id;
        b.addEventListener("click", () => togglePause(b));
        td.append(b);
        tr.append(td);
      }
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
      tr.querySelector(".name").textContent = sku.name;
      tr.querySelector(".stock").textContent = num(sku.stock);
      tr.querySelector(".units-sold").textContent = num(sku.units_sold);
      const b = tr.querySelector(".pause-switch");
      if (!b.dataset.busy) showPaused(b, sku.paused);
    });
    for (const [id, tr] of rows) if (!keep.has(id)) tr.remove();
  }

  function showPaused(b, paused) {
    b.setAttribute("aria-checked", paused ? "true" : "false");
    b.textContent = paused ? "Paused" : "On sale";
    b.title = paused ? "Resume the sale" : "Pause the sale";
  }

  async function togglePause(b) {
    const paused = b.getAttribute("aria-checked") === "true";
    const action = paused ? "resume" : "pause";
    b.dataset.busy = "1";
    b.disabled = true;
    try {
      const resp = await api("POST", "/v1/skus/" + encodeURIComponent(b.dataset.sku) + "/" + action);
      if (!resp.ok) {
        message(action + " failed: " + (await problemText(resp)), false);
        return;
      }
      const sku = await resp.json();
      showPaused(b, sku.paused);
      message((sku.paused ? "Paused " : "Resumed ") + sku.name, true);
    } catch (e) {
      message(action + " failed: " + e.message, false);
    } finally {
      delete b.dataset.busy;
      b.disabled = false;
    }
  }

  function renderReasons(reasons) {
    const body = $("reasons").tBodies[0];
    const entries = Object.entries(reasons).sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0]));
    $("reasons-empty").hidden = entries.length > 0;
    body.replaceChildren(
      ...entries.map(([reason, n]) => {
        const tr = document.createElement("tr");
        tr.dataset.reason = reason;
        tr.append(cell(reason), cell(num(n), "num count"));
        return tr;
      })
    );
  }

  function renderPartitions(parts) {
    const body = $("partitions").tBodies[0];
    body.replaceChildren(
      ...parts.map((p) => {
        const tr = document.createElement("tr");
        tr.dataset.partition = String(p.partition);
        let pin = p.worker ? p.worker : p.pinned_client ? p.pinned_client : "none";
        if (p.pinned_since) pin += " since " + new Date(p.pinned_since).toLocaleTimeString();
        if (p.error) pin = p.error;
        tr.append(cell(String(p.partition), "num"), cell(num(p.pending), "num pending"), cell(num(p.ack_pending), "num"), cell(pin, "mono pinned"));
        return tr;
      })
    );
  }

  function renderDeadLetters(dls) {
    const body = $("dead-letters").tBodies[0];
    $("dead-letters-empty").hidden = dls.length > 0;
    const rows = new Map([...body.rows].map((r) => [r.dataset.deadLetter, r]));
    const keep = new Set();
    dls.forEach((d, i) => {
      const id = String(d.id);
      keep.add(id);
      let tr = rows.get(id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.deadLetter = id;
        tr.append(
          cell(id, "num"),
          cell(String(d.partition), "num"),
          cell(d.reason),
          cell(d.last_error, "err"),
          cell(num(d.deliveries), "num"),
          cell(new Date(d.created_at).toLocaleString()),
          cell("", "dl-status")
        );
      }
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
      showReplay(tr, d);
    });
    for (const [id, tr] of rows) if (!keep.has(id)) tr.remove();
  }

  function showReplay(tr, d) {
    const td = tr.querySelector(".dl-status");
    if (d.replayed_at) {
      if (td.dataset.replayed) return;
      td.dataset.replayed = "1";
      const span = document.createElement("span");
      span.className = "replayed";
      span.textContent = "replayed " + new Date(d.replayed_at).toLocaleTimeString();
      td.replaceChildren(span);
      return;
    }
    if (td.querySelector("button")) return;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "replay";
    b.textContent = "Replay";
    b.addEventListener("click", () => replay(tr, b));
    td.replaceChildren(b);
  }

  async function replay(tr, b) {
    b.disabled = true;
    try {
      const resp = await api("POST", "/v1/admin/dead-letters/" + encodeURIComponent(tr.dataset.deadLetter) + "/replay");
      if (!resp.ok) {
        message("replay failed: " + (await problemText(resp)), false);
        b.disabled = false;
        return;
      }
      const ans = await resp.json();
      showReplay(tr, ans.dead_letter);
      message("Dead letter " + tr.dataset.deadLetter + (ans.replayed ? " replayed" : " was already replayed"), true);
    } catch (e) {
      message("replay failed: " + e.message, false);
      b.disabled = false;
    }
  }

  let messageTimer = null;
  function message(text, ok) {
    const el = $("message");
    el.textContent = text;
    el.className = "message" + (ok ? " ok" : "");
    el.hidden = false;
    if (messageTimer) clearTimeout(messageTimer);
    messageTimer = setTimeout(() => (el.hidden = true), 6000);
  }

  function api(method, path) {
    return fetch(path, { method, headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  }

  // ---- the chart: two lines on a canvas ----

  function drawChart() {
    const canvas = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 900;
    const h = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const pad = { l: 56, r: 10, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    let top = 0;
    for (const p of history) top = Math.max(top, p.a, p.d);
    top = niceCeil(top * 1.2); // headroom above the highest point
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = css.getPropertyValue("--muted") || "#667085";
    ctx.strokeStyle = css.getPropertyValue("--line") || "#e3e6eb";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, Math.round(y) + 0.5);
      ctx.lineTo(pad.l + pw, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(fmt.format(Math.round((top * i) / 4)), pad.l - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const now = history.length ? Math.max(Date.now(), history[history.length - 1].t) : Date.now();
    const xOf = (t) => pad.l + pw - (pw * (now - t)) / WINDOW_MS;
    for (const s of [120, 90, 60, 30, 0]) {
      const x = xOf(now - s * 1000);
      ctx.fillText(s === 0 ? "now" : "-" + s + "s", Math.min(Math.max(x, pad.l + 10), pad.l + pw - 10), pad.t + ph + 6);
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, 0, pw, h);
    ctx.clip();
    const line = (key, color) => {
      if (history.length < 1) return;
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      history.forEach((p, i) => {
        const x = xOf(p.t);
        const y = pad.t + ph - (ph * p[key]) / top;
        // A gap of more than 5 s (the page was disconnected) breaks the line.
        if (i === 0 || p.t - history[i - 1].t > 5000) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line("a", (css.getPropertyValue("--accepted") || "#2563eb").trim());
    line("d", (css.getPropertyValue("--decided") || "#16a34a").trim());
    ctx.restore();
  }

  function niceCeil(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  window.addEventListener("resize", drawChart);

  if (token) start();
  else showLogin("");
})();
