// dock-screen: renders the board the server pushes over server-sent events.
// Every element is built with createElement/textContent: recorder-supplied strings
// (serials, officer names, fault codes) are data, never markup. All words come from the
// message catalogue embedded in the page.
"use strict";
(() => {
  const M = JSON.parse(document.getElementById("messages").textContent);
  const root = document.documentElement;
  const LANG = root.dataset.lang;
  const VIEW = root.dataset.view;
  const LOCALE = LANG === "zh_CN" ? "zh-CN" : "en-GB";
  let last = null;

  function t(key, vars) {
    const s = Object.prototype.hasOwnProperty.call(M, key) ? M[key] : null;
    if (s === null) return null;
    return s.replace(/\{(\w+)\}/g, (m, name) =>
      vars && vars[name] !== undefined && vars[name] !== null ? String(vars[name]) : m);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s >= 3600) return t("duration.hm", { h: Math.floor(s / 3600), m: Math.floor(s % 3600 / 60) });
    if (s >= 60) return t("duration.m", { m: Math.round(s / 60) });
    return t("duration.s", { s: s });
  }

  function faultText(code) {
    return t("fault." + code) || code;
  }

  function reasonText(r) {
    const value = r.code === "open_fault" && r.value ? faultText(r.value) : r.value;
    const key = "reason." + r.code;
    if (!Object.prototype.hasOwnProperty.call(M, key)) return r.text || r.code;
    const s = t(key, { value: value });
    return s.indexOf("{value}") >= 0 ? t(key, { value: "?" }) : s;
  }

  function verdictBadge(bay) {
    const b = el("span", "verdict v-" + bay.verdict, t("verdict." + bay.verdict));
    b.dataset.verdict = bay.verdict;
    return b;
  }

  function etaText(bay) {
    if (bay.verdict !== "CHARGING") return null;
    return bay.eta_s !== null ? t("eta.ready_in", { value: duration(bay.eta_s) }) : t("eta.unknown");
  }

  function chip(text, cls) { return el("span", "chip " + (cls || ""), text); }

  function renderHeader(h) {
    const header = document.getElementById("header");
    const parts = [];
    const title = el("span", "dock", t("title.board", { value: h.dock_id || "…" }));
    parts.push(title);
    if (h.agent_reachable) {
      const clock = h.clock_synchronised === true ? ["header.clock_ok", "ok"]
        : h.clock_synchronised === false ? ["header.clock_bad", "bad"] : ["header.clock_unknown", ""];
      const c = chip(t(clock[0]), clock[1]);
      c.id = "clock-state";
      parts.push(c);
      const low = h.store_free_percent !== null && h.store_free_percent < 15;
      const disk = chip(t("header.disk", { value: bytes(h.store_free_bytes) }), low ? "warn" : "");
      if (h.store_free_percent !== null) disk.title = Math.round(h.store_free_percent) + "%";
      parts.push(disk);
      if (h.broker_connected === true) parts.push(chip(t("header.broker_ok"), "ok"));
      else if (h.broker_connected === false) {
        parts.push(chip(t("header.broker_bad", { value: h.outbox_depth === null ? "?" : h.outbox_depth }), "warn"));
      } else parts.push(chip(t("header.broker_off"), ""));
      if (h.upload) {
        const u = h.upload;
        const state = typeof u.state === "string" ? u.state
          : u.connected === true ? "ok" : u.connected === false ? "offline" : "";
        const pending = typeof u.pending === "number" ? " (" + u.pending + ")" : "";
        const up = chip(t("header.upload", { value: state + pending }), u.connected === false ? "warn" : "");
        up.id = "upload-state";
        parts.push(up);
      }
    }
    const right = el("span", "right");
    const now = el("span", "now");
    now.id = "now";
    right.appendChild(now);
    const nav = el("nav");
    const other = VIEW === "board" ? ["/preshift", "nav.preshift"] : ["/", "nav.board"];
    const link = el("a", "nav", t(other[1]));
    link.href = other[0] + "?lang=" + LANG;
    nav.appendChild(link);
    if (VIEW === "preshift") {
      const p = el("button", "print", t("nav.print"));
      p.type = "button";
      p.addEventListener("click", () => window.print());
      nav.appendChild(p);
    }
    for (const lang of ["en", "zh_CN"]) {
      if (lang === LANG) continue;
      const a = el("a", "lang", t("lang." + lang));
      a.href = location.pathname + "?lang=" + lang;
      a.id = "lang-" + lang;
      nav.appendChild(a);
    }
    right.appendChild(nav);
    parts.push(right);
    header.replaceChildren(...parts);
    tick();
  }

  function renderBanner(h) {
    const banner = document.getElementById("banner");
    const lines = [];
    if (!h.agent_reachable) lines.push(t("header.agent_down"));
    for (const code of h.dock_faults || []) lines.push(t("header.dock_fault", { value: faultText(code) }));
    banner.replaceChildren(...lines.map(x => el("div", null, x)));
    banner.hidden = lines.length === 0;
  }

  function officer(bay) {
    if (!bay.officer_no) return el("div", "officer none", t("bay.officer_none"));
    const o = el("div", "officer");
    o.appendChild(el("span", "no", bay.officer_no));
    if (bay.officer_name) o.appendChild(el("span", "name", bay.officer_name));
    return o;
  }

  function battery(bay) {
    const row = el("div", "battery");
    const pct = bay.battery_percent;
    const bar = el("span", "bar");
    const fill = el("span", "fill v-" + bay.verdict);
    fill.style.width = (pct === null ? 0 : Math.max(0, Math.min(100, pct))) + "%";
    bar.appendChild(fill);
    row.appendChild(bar);
    let text = t("bay.battery", { value: pct === null ? "–" : Math.round(pct) + "%" });
    if (bay.charging) text += " · " + t("bay.charging");
    row.appendChild(el("span", "pct", text));
    const eta = etaText(bay);
    if (eta) row.appendChild(el("span", "eta", eta));
    return row;
  }

  function phase(bay) {
    const box = el("div", "phase p-" + bay.phase);
    box.dataset.phase = bay.phase;
    if (bay.phase === "offloading") {
      box.appendChild(el("div", "what", t("phase.offloading")));
      const p = bay.progress;
      if (!p) return box;  // listing the recorder: no totals yet
      const bar = el("div", "progress");
      const fill = el("span", "fill");
      fill.style.width = p.percent + "%";
      bar.appendChild(fill);
      bar.appendChild(el("span", "label", Math.floor(p.percent) + "%"));
      box.appendChild(bar);
      const facts = [t("progress.files", { done: p.files_done, total: p.files_total })];
      if (p.rate_bps) facts.push(t("progress.rate", { value: bytes(p.rate_bps) }));
      if (p.eta_s !== null) facts.push(t("progress.eta", { value: duration(p.eta_s) }));
      box.appendChild(el("div", "facts", facts.join(" · ")));
    } else if (bay.phase === "updating") {
      box.appendChild(el("div", "what", t("phase.updating")));
      if (bay.firmware_percent !== null) {
        box.appendChild(el("div", "facts",
                           t("phase.firmware", { value: Math.floor(bay.firmware_percent) })));
      }
    } else if (bay.phase === "safe") {
      box.appendChild(el("div", "what", t("phase.safe")));
      box.appendChild(el("div", "facts", t("phase.stored", { value: bay.stored })));
    } else if (bay.phase === "kept") {
      box.appendChild(el("div", "what", t("phase.kept", { value: bay.not_copied })));
    } else if (bay.phase === "failed") {
      box.appendChild(el("div", "what", t("phase.failed")));
    } else {
      box.appendChild(el("div", "what", t("phase.checking")));
    }
    return box;
  }

  function card(bay) {
    const c = el("section", "card v-" + bay.verdict);
    c.dataset.bay = bay.bay;
    c.dataset.verdict = bay.verdict;
    c.dataset.phase = bay.phase;
    const top = el("div", "top");
    top.appendChild(el("span", "bayno", t("bay.label", { value: bay.bay })));
    top.appendChild(el("span", "serial", bay.serial || ""));
    top.appendChild(verdictBadge(bay));
    c.appendChild(top);
    c.appendChild(officer(bay));
    c.appendChild(battery(bay));
    c.appendChild(phase(bay));
    if (bay.verdict !== "READY" && bay.reasons.length) {
      const ul = el("ul", "reasons");
      for (const r of bay.reasons) {
        if (r.code === "offload_pending" && bay.phase === "offloading") continue;
        const li = el("li", null, reasonText(r));
        li.dataset.code = r.code;
        ul.appendChild(li);
      }
      if (ul.childElementCount) c.appendChild(ul);
    }
    return c;
  }

  function renderBoard(data) {
    const main = document.getElementById("main");
    if (!data.bays.length) {
      main.replaceChildren(el("div", "empty", t("bay.empty")));
      return;
    }
    const grid = el("div", "grid n" + Math.min(data.bays.length, 6));
    for (const bay of data.bays) grid.appendChild(card(bay));
    main.replaceChildren(grid);
  }

  function renderPreshift(data) {
    const main = document.getElementById("main");
    const title = el("h1", null, t("title.preshift") + " — " + (data.header.dock_id || ""));
    const printed = el("p", "printed", t("preshift.printed", { value: new Date().toLocaleString(LOCALE) }));
    if (!data.bays.length) {
      main.replaceChildren(title, printed, el("div", "empty", t("bay.empty")));
      return;
    }
    const byBay = new Map(data.bays.map(b => [b.bay, b]));
    const table = el("table", "preshift");
    const head = el("tr");
    for (const k of ["bay", "recorder", "officer", "battery", "verdict", "why"]) {
      head.appendChild(el("th", null, t("preshift.col." + k)));
    }
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    for (const row of data.preshift) {
      const b = byBay.get(row.bay);
      if (!b) continue;
      const tr = el("tr", "v-" + b.verdict + (row.best ? " best" : ""));
      tr.dataset.bay = b.bay;
      tr.appendChild(el("td", null, b.bay));
      tr.appendChild(el("td", null, b.serial || ""));
      const off = el("td");
      off.appendChild(el("span", null, [b.officer_no, b.officer_name].filter(Boolean).join(" ") || t("bay.officer_none")));
      if (row.best) off.appendChild(el("span", "bestmark", t("preshift.best")));
      tr.appendChild(off);
      tr.appendChild(el("td", null, b.battery_percent === null ? "–" : Math.round(b.battery_percent) + "%"));
      const v = el("td");
      v.appendChild(verdictBadge(b));
      tr.appendChild(v);
      const why = [];
      const eta = etaText(b);
      if (eta) why.push(eta);
      if (b.verdict !== "READY") for (const r of b.reasons) why.push(reasonText(r));
      tr.appendChild(el("td", "why", why.join("; ")));
      body.appendChild(tr);
    }
    table.appendChild(body);
    main.replaceChildren(title, printed, table);
  }

  function render(data) {
    last = data;
    renderHeader(data.header);
    renderBanner(data.header);
    if (VIEW === "preshift") renderPreshift(data); else renderBoard(data);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function tick() {
    const now = document.getElementById("now");
    if (now) now.textContent = new Date().toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" });
  }

  function connect() {
    const es = new EventSource("/events");
    const banner = document.getElementById("banner");
    es.addEventListener("board", ev => {
      document.body.classList.remove("stale");
      render(JSON.parse(ev.data));
    });
    es.onerror = () => {
      document.body.classList.add("stale");
      banner.replaceChildren(el("div", null, t("header.connection_lost")));
      banner.hidden = false;
    };
    es.onopen = () => { if (last) renderBanner(last.header); };
  }

  setInterval(tick, 1000);
  connect();
})();
