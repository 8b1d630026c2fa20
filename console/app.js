// The callstream operator console: a page on the public API and WebSocket protocol, nothing else.
// No framework and no build step (docs/console.md): every element is made with `h`, every text
// goes in as text (never as HTML), and the bearer token lives in this closure's memory only.
"use strict";

(() => {
  let token = null;
  let claims = null;
  /** Called when the view is left: timers and sockets it opened. */
  let leave = () => {};

  // ---- Elements ----------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const main = () => document.getElementById("main");
  const statusBar = () => document.getElementById("status");

  function say(text, kind) {
    const bar = statusBar();
    bar.textContent = text;
    bar.className = "status" + (kind ? " " + kind : "");
  }

  function sayError(err) {
    say(`${err.code || "ERROR"}: ${err.message}`, "error");
  }

  /** A time in the viewer's zone, UTC on hover. */
  function when(iso) {
    if (!iso) return h("span", { class: "muted" }, "—");
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return h("span", {}, iso);
    return h("time", { datetime: date.toISOString(), title: "UTC " + date.toISOString() }, date.toLocaleString());
  }

  function badge(text) {
    return h("span", { class: "badge " + String(text).replace(/[^a-z_]/gi, "") }, text);
  }

  /** `body`: rows, or a `tbody` the view fills later. */
  function table(headers, body, label) {
    const tbody = body instanceof HTMLTableSectionElement ? body : h("tbody", {}, body);
    return h("div", { class: "table-wrap" },
      h("table", { "aria-label": label },
        h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
        tbody));
  }

  function empty(columns, text) {
    return h("tr", {}, h("td", { colspan: columns, class: "muted" }, text));
  }

  // ---- The API -----------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const err = new Error((data && data.error && data.error.message) || response.statusText || "request failed");
      err.code = (data && data.error && data.error.code) || "HTTP_" + response.status;
      err.status = response.status;
      throw err;
    }
    return data;
  }

  /** Run an action the operator asked for, and say how it went. */
  async function act(what, work) {
    try {
      const result = await work();
      say(what + ": done", "ok");
      return result;
    } catch (err) {
      sayError(err);
      return null;
    }
  }

  // ---- Sign-in -----------------------------------------------------------------------------------

  function decodeClaims(jwt) {
    const part = jwt.split(".")[1];
    if (!part) throw new Error("not a JWT");
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json);
  }

  async function signIn(candidate) {
    const trimmed = candidate.trim();
    let decoded;
    try { decoded = decodeClaims(trimmed); } catch (_) {
      say("AUTH_INVALID: that is not a token (a JWT has three dot-separated parts)", "error");
      return false;
    }
    token = trimmed;
    claims = decoded;
    try {
      // Any authenticated read proves the token; the API decides what it may do.
      await api("GET", "/v1/call/sessions?limit=1");
    } catch (err) {
      token = null;
      claims = null;
      sayError(err);
      return false;
    }
    document.getElementById("nav").hidden = false;
    document.getElementById("sign-out").hidden = false;
    document.getElementById("who").textContent =
      `${claims.sub} · tenant ${claims.tenant} · ${(claims.roles || []).join(", ")}`;
    say("Signed in. The token is kept in this page's memory only.", "ok");
    if (!location.hash.startsWith("#/")) location.hash = "#/sessions";
    else route();
    return true;
  }

  function signOut() {
    leave();
    token = null;
    claims = null;
    document.getElementById("nav").hidden = true;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("who").textContent = "";
    say("Signed out.");
    showSignIn();
  }

  function showSignIn() {
    const field = h("textarea", { id: "token", name: "token", autocomplete: "off", spellcheck: "false", required: true });
    const form = h("form", { class: "panel signin", "aria-labelledby": "signin-title", onsubmit: (e) => {
      e.preventDefault();
      signIn(field.value);
    } },
      h("h1", { id: "signin-title" }, "Sign in"),
      h("p", {}, "Paste a bearer token. Its roles decide what the console can do; it is never stored."),
      h("label", { for: "token" }, "Token"), field,
      h("p", {}, h("button", { type: "submit", class: "primary", id: "sign-in" }, "Sign in")));
    main().replaceChildren(form);
    field.focus();
  }

  // ---- Routing -----------------------------------------------------------------------------------

  function route() {
    leave();
    leave = () => {};
    if (!token) return showSignIn();
    const [, view, id] = location.hash.split("/");
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.view === (view === "session" ? "sessions" : view)) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const views = { sessions, session: () => session(decodeURIComponent(id || "")), billing, "dead-letters": deadLetters, tenants, audit };
    (views[view] || sessions)();
    main().focus({ preventScroll: true });
  }

  /** Poll `load` every `ms` while the view is shown. */
  function every(ms, load) {
    let stopped = false;
    let timer = null;
    const tick = async () => {
      if (stopped) return;
      await load();
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // ---- Live sessions -----------------------------------------------------------------------------

  function sessions() {
    const body = h("tbody", { id: "sessions-body" });
    const showEnded = h("input", { type: "checkbox", id: "show-ended" });
    main().replaceChildren(
      h("h1", {}, "Live sessions"),
      h("div", { class: "toolbar" },
        h("label", { class: "switch" }, showEnded, "Show ended and failed"),
        h("span", { class: "muted", id: "sessions-refreshed" }, "")),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Sessions" },
        h("thead", {}, h("tr", {}, ["Session", "Title", "Owner", "State", "Participants", "Events", "Last event"]
          .map((t, i) => h("th", { scope: "col", class: i === 1 || i === 2 ? "hide-narrow" : null }, t)))),
        body)));
    const participants = new Map();
    const load = async () => {
      try {
        const page = await api("GET", "/v1/call/sessions?limit=100");
        const shown = page.sessions.filter((s) => showEnded.checked || !["ended", "failed"].includes(s.state));
        for (const s of shown.filter((s) => !["ended", "failed"].includes(s.state)).slice(0, 20)) {
          const known = participants.get(s.sessionId);
          if (!known || known.head !== s.headSeq) {
            const view = await api("GET", `/v1/call/sessions/${encodeURIComponent(s.sessionId)}`);
            const joined = view.participants.filter((p) => p.state === "joined").length;
            participants.set(s.sessionId, { head: s.headSeq, joined });
          }
        }
        const rows = shown.map((s) => {
          const joined = participants.get(s.sessionId);
          return h("tr", { "data-session": s.sessionId },
            h("td", { class: "mono" }, h("a", { href: `#/session/${encodeURIComponent(s.sessionId)}` }, s.sessionId)),
            h("td", { class: "hide-narrow" }, s.title || "—"),
            h("td", { class: "hide-narrow" }, s.ownerId),
            h("td", {}, badge(s.state)),
            h("td", {}, joined ? String(joined.joined) : "—"),
            h("td", {}, String(s.eventCount)),
            h("td", {}, when(s.lastEventAt)));
        });
        body.replaceChildren(...(rows.length ? rows : [empty(7, "No live sessions.")]));
        document.getElementById("sessions-refreshed").textContent = "refreshed " + new Date().toLocaleTimeString();
      } catch (err) {
        sayError(err);
      }
    };
    showEnded.addEventListener("change", load);
    leave = every(2000, load);
  }

  // ---- One session: timeline, conversation, insights ---------------------------------------------

  const FAMILIES = ["call", "transcript", "orchestration", "safety", "billing", "insights"];

  function session(id) {
    const feedList = h("ol", { id: "timeline", "aria-label": "Events in seq order" });
    const feedBox = h("div", { class: "feed", tabindex: "0" }, feedList);
    const connection = h("span", { class: "connection", id: "connection", "aria-live": "polite" }, badge("connecting"));
    const seqInfo = h("span", { class: "muted mono", id: "seq-info" }, "no events yet");
    const title = h("span", {}, id);
    const state = h("span", { id: "session-state" }, "");
    const hiddenFamilies = new Set();
    const filters = h("fieldset", { class: "filters" }, h("legend", { class: "visually-hidden" }, "Show families"),
      FAMILIES.map((family) => h("label", {}, h("input", { type: "checkbox", checked: true, "data-family": family, onchange: (e) => {
        if (e.target.checked) hiddenFamilies.delete(family); else hiddenFamilies.add(family);
        for (const li of feedList.children) li.hidden = hiddenFamilies.has(li.dataset.family);
      } }), " " + family)));
    const conversation = h("div", { class: "conversation", id: "conversation", tabindex: "0", "aria-label": "Transcript" },
      h("p", { class: "muted" }, "No transcript yet."));
    const insightsBox = h("div", { id: "insights" }, h("p", { class: "muted" }, "No insights yet."));
    main().replaceChildren(
      h("h1", {}, "Session ", title, " ", state),
      h("div", { class: "toolbar" }, connection, seqInfo, h("a", { href: "#/sessions" }, "← all sessions")),
      h("div", { class: "session-grid" },
        h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), filters, feedBox),
        h("section", {},
          h("h2", { id: "conversation-title" }, "Conversation"), conversation,
          h("h2", {}, "Insights"), insightsBox)));

    let lastSeq = 0;
    let socket = null;
    let resumeToken = null;
    let closed = false;
    let retryMs = 500;
    let ackTimer = null;
    let refreshTimer = null;

    const setConnection = (text) => connection.replaceChildren(badge(text));
    const family = (type) => type.split(".")[0];

    function append(event) {
      if (event.seq <= lastSeq) return; // a replay of what is already shown
      if (event.seq !== lastSeq + 1) {
        // Never expected (the server sends in seq order with no gaps); fetch what is missing.
        fillGap(lastSeq, event.seq);
        return;
      }
      lastSeq = event.seq;
      const stick = feedBox.scrollTop + feedBox.clientHeight >= feedBox.scrollHeight - 8;
      const li = h("li", { "data-seq": event.seq, "data-family": family(event.type) },
        h("span", { class: "mono" }, "#" + event.seq),
        h("span", { class: "at" }, when(event.recordedAt)),
        h("span", { class: "type" }, event.type, " ", h("span", { class: "muted" }, summary(event))));
      li.hidden = hiddenFamilies.has(family(event.type));
      feedList.append(li);
      if (stick) feedBox.scrollTop = feedBox.scrollHeight;
      seqInfo.textContent = `events 1–${lastSeq}, in order, none missing`;
      if (event.type.startsWith("call.session.")) { loadSession(); scheduleRefresh(); }
      if (event.type.startsWith("transcript.") || event.type === "insights.computed") scheduleRefresh();
      scheduleAck();
    }

    /** Read events after `after` up to `upTo` over HTTP, page by page. */
    async function fillGap(after, upTo) {
      try {
        for (;;) {
          const page = await api("GET", `/v1/realtime/sessions/${encodeURIComponent(id)}/events?after=${after}&limit=1000`);
          for (const event of page.events) if (event.seq <= upTo) append(event);
          after = page.diagnostics.nextAfter;
          if (!page.diagnostics.hasMore || after >= upTo) return;
        }
      } catch (err) { sayError(err); }
    }

    function summary(event) {
      const p = event.payload || {};
      if (p.erased) return "(personal fields erased)";
      if (event.type.startsWith("transcript.")) return `${p.speaker ? p.speaker + ": " : ""}${p.text || ""}`;
      if (event.type === "call.session.state_changed") return `→ ${p.to}`;
      if (p.actionId) return p.actionId;
      if (p.meter) return `${p.meter} ${p.quantity ?? ""}`;
      return "";
    }

    function scheduleAck() {
      if (ackTimer) return;
      ackTimer = setTimeout(() => {
        ackTimer = null;
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ op: "ack", seq: lastSeq }));
      }, 300);
    }

    function scheduleRefresh() {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => { loadTranscript(); loadInsights(); }, 400);
    }

    function connect(query) {
      const base = location.origin.replace(/^http/, "ws");
      socket = new WebSocket(`${base}/v1/realtime/sessions/${encodeURIComponent(id)}/ws?access_token=${encodeURIComponent(token)}${query}`);
      socket.onmessage = (message) => {
        let frame;
        try { frame = JSON.parse(message.data); } catch (_) { return; }
        if (frame.op === "welcome") {
          resumeToken = frame.resumeToken;
          retryMs = 500;
          setConnection("live");
        } else if (frame.op === "event") {
          append(frame.event);
        } else if (frame.op === "error") {
          say(`${frame.code}: ${frame.message}`, "error");
        }
      };
      socket.onclose = (close) => {
        socket = null;
        if (closed) return;
        if (close.code === 4410) {
          // The socket ends with the terminal event; what the same commit appended after it (usage,
          // final insights) is read over HTTP.
          setConnection("ended");
          fillGap(lastSeq, Number.MAX_SAFE_INTEGER).then(scheduleRefresh);
          return;
        }
        if (close.code === 4001) { setConnection("superseded"); return; }
        setConnection("reconnecting");
        connection.append(" reconnecting…");
        setTimeout(resume, retryMs);
        retryMs = Math.min(retryMs * 2, 5000);
      };
    }

    /** Resume from the server-kept checkpoint; the page drops what it already shows. */
    async function resume() {
      if (closed) return;
      if (!resumeToken) { connect(`&after=${lastSeq}`); return; }
      try {
        const answer = await api("POST", `/v1/call/sessions/${encodeURIComponent(id)}/reconnect`, { resumeToken });
        resumeToken = answer.resumeToken;
        connect(`&resumeToken=${encodeURIComponent(answer.resumeToken)}`);
      } catch (err) {
        if (err.code === "SESSION_TERMINATED") {
          await fillGap(lastSeq, Number.MAX_SAFE_INTEGER);
          setConnection("ended");
        } else if (err.code === "RESUME_TOKEN_INVALID" || err.code === "RESUME_WINDOW_EXPIRED") {
          connect(`&after=${lastSeq}`); // a new connection from what the page shows
        } else {
          // The network is still down (a fetch error has no code) or the server is restarting.
          setTimeout(resume, retryMs);
          retryMs = Math.min(retryMs * 2, 5000);
        }
      }
    }

    async function loadSession() {
      try {
        const view = await api("GET", `/v1/call/sessions/${encodeURIComponent(id)}`);
        title.textContent = view.title ? `${view.title} (${id})` : id;
        state.replaceChildren(badge(view.state));
        return view;
      } catch (err) { sayError(err); return null; }
    }

    async function loadTranscript() {
      try {
        const transcript = await api("GET", `/v1/realtime/sessions/${encodeURIComponent(id)}/transcript`);
        const speakers = [];
        const turns = transcript.segments.map((segment) => {
          const speaker = segment.erased ? null : segment.speaker;
          if (!speakers.includes(speaker)) speakers.push(speaker);
          const at = segment.startMs === null || segment.startMs === undefined ? "" :
            `${Math.floor(segment.startMs / 60000)}:${String(Math.floor(segment.startMs / 1000) % 60).padStart(2, "0")}`;
          return h("div", { class: "turn" + (speakers.indexOf(speaker) % 2 ? " alt" : ""), "data-segment": segment.segmentId },
            h("div", { class: "speaker" }, speaker || (segment.erased ? "(erased)" : "—"), " ", h("span", { class: "muted" }, at),
              segment.kind === "partial" ? h("span", { class: "muted" }, " (partial)") : null),
            h("div", {}, segment.erased ? "(erased)" : segment.text));
        });
        conversation.replaceChildren(...(turns.length ? turns : [h("p", { class: "muted" }, "No transcript yet.")]));
        conversation.scrollTop = conversation.scrollHeight;
      } catch (err) { sayError(err); }
    }

    async function loadInsights() {
      try {
        const view = await api("GET", `/v1/call/sessions/${encodeURIComponent(id)}/insights`);
        const rows = view.speakers.map((s) => h("tr", {},
          h("td", {}, s.speaker || "—"),
          h("td", {}, `${Math.round(s.talkTimeMs / 1000)} s`),
          h("td", {}, String(s.words)),
          h("td", { class: "hide-narrow" }, s.wordsPerMinute === null ? "—" : String(s.wordsPerMinute)),
          h("td", { title: Object.entries(s.fillers.byFiller).map(([k, v]) => `${k}: ${v}`).join(", ") }, String(s.fillers.count)),
          h("td", { class: "hide-narrow" }, String(s.pauses.count)),
          h("td", {}, String(s.interruptions))));
        insightsBox.replaceChildren(
          h("p", { class: "muted" }, view.final ? `Final (revision ${view.revision})` : "Live: counting finals and edits",
            view.erased ? " · speakers erased" : "",
            ` · ${view.call.words} words, ${view.call.turnCount} turns, silence ${Math.round((view.call.silenceShare || 0) * 100)} %`),
          table([["Speaker"], ["Talk"], ["Words"], ["Words/min", "hide-narrow"], ["Fillers"], ["Pauses", "hide-narrow"], ["Interrupts"]],
            rows.length ? rows : [empty(7, "Nobody has spoken yet.")], "Insights per speaker"));
      } catch (err) { sayError(err); }
    }

    loadTranscript();
    loadInsights();
    loadSession().then(async (view) => {
      if (view && ["ended", "failed"].includes(view.state)) {
        // A terminal session takes no connections: its whole log over HTTP.
        await fillGap(0, Number.MAX_SAFE_INTEGER);
        setConnection("ended");
      } else if (!closed) {
        connect("");
      }
    });
    leave = () => {
      closed = true;
      clearTimeout(ackTimer);
      clearTimeout(refreshTimer);
      if (socket) socket.close(1000);
    };
  }

  // ---- Billing -----------------------------------------------------------------------------------

  function billing() {
    const tenant = claims.tenant;
    const charts = h("div", { id: "usage" }, h("p", { class: "muted" }, "Loading usage…"));
    const runsBody = h("tbody", { id: "runs-body" });
    const runDetail = h("div", { id: "run-detail" });
    const scheduler = h("div", { id: "scheduler" });
    const windowInput = h("input", { type: "datetime-local", id: "window-start", "aria-describedby": "window-help" });
    main().replaceChildren(
      h("h1", {}, `Billing · tenant ${tenant}`),
      h("section", { class: "panel" }, h("h2", {}, "Usage per meter and hour (the last day)"), charts),
      h("section", { class: "panel" },
        h("h2", {}, "Reconciliation"),
        h("div", { class: "toolbar" },
          h("label", { for: "window-start" }, "Window"), windowInput,
          h("span", { id: "window-help", class: "muted" }, "empty: the newest closed hour"),
          h("button", { type: "button", class: "primary", id: "trigger", onclick: () => trigger(false) }, "Trigger reconciliation")),
        table([["Window"], ["Revision"], ["Trigger", "hide-narrow"], ["Comparisons", "hide-narrow"], ["Mismatches"], ["Completed"], [""]],
          runsBody, "Reconciliation runs"),
        runDetail),
      h("section", { class: "panel" }, h("h2", {}, "Scheduler"), scheduler));

    async function trigger(rerunOf) {
      const body = {};
      if (rerunOf) { body.windowStart = rerunOf; body.rerun = true; }
      else if (windowInput.value) body.windowStart = new Date(windowInput.value).toISOString().replace(/:\d\d\.\d{3}Z$/, ":00Z");
      const run = await act(rerunOf ? "Rerun" : "Reconciliation", () => api("POST", "/v1/billing/reconciliation/hourly-trigger", body));
      if (run) { await loadRuns(); showRun(run.runId); }
    }

    async function showRun(runId) {
      try {
        const run = await api("GET", `/v1/billing/reconciliation/runs/${encodeURIComponent(runId)}`);
        const lines = run.lines.map((l) => h("tr", {}, h("td", {}, l.meter), h("td", {}, String(l.metered)),
          h("td", {}, String(l.charged)), h("td", {}, String(l.adjusted)), h("td", {}, String(l.delta))));
        const mismatches = run.mismatchDetails.map((m) => h("tr", {}, h("td", {}, m.meter), h("td", {}, String(m.delta)),
          h("td", {}, badge(m.alertState)), h("td", {}, m.alertErrorCode || "—")));
        runDetail.replaceChildren(
          h("h2", {}, `Run ${run.runId} (revision ${run.revision})`),
          table([["Meter"], ["Metered"], ["Charged"], ["Adjusted"], ["Delta"]], lines.length ? lines : [empty(5, "No usage in this window.")], "Run lines"),
          h("h2", {}, "Mismatches and alerts"),
          table([["Meter"], ["Delta"], ["Alert"], ["Alert error"]], mismatches.length ? mismatches : [empty(4, "No mismatches.")], "Mismatches"));
      } catch (err) { sayError(err); }
    }

    async function loadRuns() {
      try {
        const page = await api("GET", "/v1/billing/reconciliation/runs?limit=50");
        const rows = page.runs.map((run) => h("tr", { "data-run": run.runId },
          h("td", {}, h("button", { type: "button", onclick: () => showRun(run.runId), "aria-label": "Show run " + run.runId }, new Date(run.windowStart).toLocaleString())),
          h("td", {}, String(run.revision)),
          h("td", { class: "hide-narrow" }, run.trigger),
          h("td", { class: "hide-narrow" }, String(run.comparisons)),
          h("td", {}, run.mismatches ? badge(String(run.mismatches)) : "0"),
          h("td", {}, when(run.completedAt)),
          h("td", {}, h("button", { type: "button", onclick: () => trigger(run.windowStart) }, "Rerun"))));
        runsBody.replaceChildren(...(rows.length ? rows : [empty(7, "No reconciliation runs yet.")]));
      } catch (err) { sayError(err); }
    }

    async function loadUsage() {
      try {
        // Through the end of the next hour, so usage stamped by a server clock a little ahead of
        // this machine's is still in range.
        const to = new Date(Date.now() + 2 * 3600e3);
        const from = new Date(to.getTime() - 26 * 3600e3);
        const hour = (d) => d.toISOString().replace(/:\d\d:\d\d\.\d{3}Z$/, ":00:00Z");
        const summary = await api("GET", `/v1/billing/accounts/${encodeURIComponent(tenant)}/usage-summary?from=${hour(from)}&to=${hour(to)}&groupBy=hour`);
        const meters = [...new Set(summary.lines.map((l) => l.meter))];
        const blocks = meters.map((meter) => chart(meter, summary.lines.filter((l) => l.meter === meter), new Date(hour(from)), 26));
        charts.replaceChildren(
          h("p", {}, `Total ${summary.total.value} ${summary.total.currency}`),
          ...(blocks.length ? blocks : [h("p", { class: "muted" }, "No usage in the last day.")]));
      } catch (err) { sayError(err); }
    }

    async function loadScheduler() {
      try {
        const view = await api("GET", "/v1/billing/reconciliation/scheduler");
        const toggle = h("input", { type: "checkbox", id: "scheduler-enabled", checked: view.enabled, onchange: async (e) => {
          const done = await act("Scheduler", () => api("PUT", "/v1/billing/reconciliation/scheduler", { enabled: e.target.checked }));
          if (!done) e.target.checked = !e.target.checked;
          loadScheduler();
        } });
        scheduler.replaceChildren(
          h("label", { class: "switch" }, toggle, "Reconcile each closed window automatically"),
          h("p", { class: "muted" }, "Last run ", when(view.lastRunAt), " · next window ", when(view.nextWindow),
            view.lastError ? ` · last error: ${view.lastError}` : ""));
      } catch (err) { sayError(err); }
    }

    loadUsage();
    loadScheduler();
    leave = every(5000, loadRuns);
  }

  /** One meter's hourly usage as bars, with the numbers as a table for screen readers. */
  function chart(meter, lines, from, hours) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 500 180");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${meter} per hour`);
    const byHour = new Map(lines.map((l) => [new Date(l.windowStart).getTime(), l.quantity]));
    const max = Math.max(1, ...lines.map((l) => l.quantity));
    const width = 480 / hours;
    for (let i = 0; i < hours; i++) {
      const at = from.getTime() + i * 3600e3;
      const quantity = byHour.get(at) || 0;
      const height = (quantity / max) * 140;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("class", "bar");
      bar.setAttribute("x", String(10 + i * width));
      bar.setAttribute("y", String(150 - height));
      bar.setAttribute("width", String(Math.max(1, width - 2)));
      bar.setAttribute("height", String(height));
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `${new Date(at).toLocaleString()} (UTC ${new Date(at).toISOString()}): ${quantity}`;
      bar.append(tip);
      svg.append(bar);
      if (i % 4 === 0) {
        const label = document.createElementNS(ns, "text");
        label.setAttribute("x", String(10 + i * width));
        label.setAttribute("y", "168");
        label.textContent = new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        svg.append(label);
      }
    }
    const unit = lines[0] ? lines[0].unit : "";
    return h("figure", { "data-meter": meter },
      h("figcaption", {}, `${meter} (${unit}), max ${max} in an hour`), svg,
      h("table", { class: "visually-hidden" }, h("caption", {}, `${meter} per hour`),
        h("tbody", {}, lines.map((l) => h("tr", {}, h("td", {}, l.windowStart), h("td", {}, String(l.quantity)))))));
  }

  // ---- Dead letters ------------------------------------------------------------------------------

  function deadLetters() {
    const body = h("tbody", { id: "dead-letters-body" });
    main().replaceChildren(
      h("h1", {}, `Dead letters · tenant ${claims.tenant}`),
      h("p", { class: "muted" }, "Billing events the sink refused or that ran out of attempts. A replay sends the item back to the outbox, once."),
      table([["Dead letter"], ["Kind", "hide-narrow"], ["Error"], ["Attempts", "hide-narrow"], ["Dead-lettered"], ["State"], [""]], body, "Dead letters"));
    const load = async () => {
      try {
        const page = await api("GET", `/v1/billing/accounts/${encodeURIComponent(claims.tenant)}/dead-letters`);
        const rows = page.deadLetters.map((d) => h("tr", { "data-dead-letter": d.deadLetterId },
          h("td", { class: "mono", title: d.lastError || "" }, d.deadLetterId),
          h("td", { class: "hide-narrow" }, d.kind),
          h("td", {}, `${d.errorCode} (${d.stage})`),
          h("td", { class: "hide-narrow" }, String(d.attempts)),
          h("td", {}, when(d.deadLetteredAt)),
          h("td", {}, badge(d.replayedAt ? "replayed" : "open")),
          h("td", {}, d.replayedAt ? h("span", { class: "muted" }, "by " + d.replayedBy) :
            h("button", { type: "button", onclick: async () => {
              await act("Replay", () => api("POST", `/v1/billing/dead-letters/${encodeURIComponent(d.deadLetterId)}/replay`, {}));
              load();
            } }, "Replay"))));
        body.replaceChildren(...(rows.length ? rows : [empty(7, "No dead letters.")]));
      } catch (err) { sayError(err); }
    };
    leave = every(3000, load);
  }

  // ---- Tenants -----------------------------------------------------------------------------------

  function tenants() {
    const body = h("tbody", { id: "tenants-body" });
    main().replaceChildren(
      h("h1", {}, "Tenants"),
      table([["Tenant"], ["Name", "hide-narrow"], ["Status"], ["Quotas", "hide-narrow"], ["Updated"], [""]], body, "Tenants"));
    const load = async () => {
      try {
        const list = await api("GET", "/v1/operator/tenants");
        const rows = list.tenants.map((t) => {
          const next = t.status === "active" ? "suspended" : "active";
          return h("tr", { "data-tenant": t.tenantId },
            h("td", { class: "mono" }, t.tenantId),
            h("td", { class: "hide-narrow" }, t.name || "—"),
            h("td", {}, badge(t.status)),
            h("td", { class: "hide-narrow mono" }, JSON.stringify(t.quotas)),
            h("td", {}, when(t.updatedAt)),
            h("td", {}, h("button", { type: "button", onclick: async () => {
              await act(next === "suspended" ? "Suspend" : "Resume",
                () => api("PATCH", `/v1/operator/tenants/${encodeURIComponent(t.tenantId)}`, { status: next }));
              load();
            } }, next === "suspended" ? "Suspend" : "Resume")));
        });
        body.replaceChildren(...(rows.length ? rows : [empty(6, "No tenant records yet (tenants appear when an operator creates one).")]));
      } catch (err) { sayError(err); }
    };
    leave = every(5000, load);
  }

  // ---- Audit -------------------------------------------------------------------------------------

  function audit() {
    const body = h("tbody", { id: "audit-body" });
    main().replaceChildren(
      h("h1", {}, "Audit trail"),
      h("p", { class: "muted" }, "Every operator and governance action, newest first."),
      table([["When"], ["Actor"], ["Action"], ["Target"], ["Details", "hide-narrow"]], body, "Audit trail"));
    const load = async () => {
      try {
        const page = await api("GET", "/v1/governance/audit?limit=1000");
        const rows = page.entries.slice().reverse().map((e) => h("tr", { "data-audit": e.auditId },
          h("td", {}, when(e.at)),
          h("td", {}, `${e.actor.userId} (${e.actor.tenantId})`),
          h("td", { class: "mono" }, e.action),
          h("td", { class: "mono" }, e.target),
          h("td", { class: "hide-narrow mono", title: JSON.stringify(e.details) }, JSON.stringify(e.details))));
        body.replaceChildren(...(rows.length ? rows : [empty(5, "Nothing audited yet.")]));
      } catch (err) { sayError(err); }
    };
    leave = every(5000, load);
  }

  // ---- Start -------------------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  document.addEventListener("securitypolicyviolation", (e) => {
    document.documentElement.dataset.cspViolations = String(Number(document.documentElement.dataset.cspViolations || 0) + 1);
    say(`Blocked by the page's security policy: ${e.violatedDirective}`, "error");
  });
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("sign-out").addEventListener("click", signOut);
    // `serve --dev` prints a link with the token in the fragment (never sent to a server): take it
    // out of the address bar at once and keep it in memory.
    const match = location.hash.match(/^#token=([^&]+)/);
    if (match) {
      history.replaceState(null, "", location.pathname + "#/sessions");
      signIn(decodeURIComponent(match[1]));
    } else {
      route();
    }
  });
})();
