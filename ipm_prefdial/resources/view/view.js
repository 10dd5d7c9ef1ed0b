"use strict";
// The page of `ipm view`. Everything it shows comes from the JSON block #ipm-data and enters the document as text
// (textContent, setAttribute): no HTML is ever parsed from the data.
(function () {
  const D = JSON.parse(document.getElementById("ipm-data").textContent);
  const STR = D.strings;
  const PAGE = 50;
  const FLAG_NAMES = D.flags.map(f => f.name);
  const TASK = { strategy_pairs: "sp", response_pairs: "rg", joint_pairs: "vm" };
  const LABELS = D.labels.slice(0, 4);
  const REPLY_BINS = [0, 5, 10, 15, 20, 30, 40, 60, 80, 120];
  const PROMPT_STEP = 128, PROMPT_BINS = 17;
  const FILTERS = ["config", "split", "strategy", "pred", "status", "error", "flag", "rlen", "plen", "q"];
  const BLANK = { config: "", split: "", strategy: "", pred: "", status: "", error: "", flag: "", rlen: "", plen: "",
    q: "", page: 0, pair: "", tab: "" };
  let F = Object.assign({}, BLANK);
  let matched = [];
  const byKey = new Map();
  D.pairs.forEach(p => byKey.set(D.configs[p.k] + "/" + p.id, p));

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, String(v));
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  const fmt = n => (n === null || n === undefined) ? "-" : (typeof n === "number" ? n.toLocaleString("en-US") : String(n));
  const configOf = p => D.configs[p.k];
  const keyOf = p => configOf(p) + "/" + p.id;
  const strategyName = i => i >= 0 ? D.strategies[i] : "(none)";
  const hasVerdict = p => p.jr !== undefined;
  function fnv(text) { // a stable 32-bit hash (FNV-1a) for the order of the annotation queue
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    return h;
  }
  const wordCache = new Map();
  function words(i) {
    if (i < 0) return 0;
    let n = wordCache.get(i);
    if (n === undefined) {
      const text = STR[i].replace(/^\s*\[[^\]]*\]/, "");
      n = (text.match(/[\p{L}\p{N}_]+/gu) || []).length;
      wordCache.set(i, n);
    }
    return n;
  }
  const lowerCache = new Map();
  function lower(i) {
    if (i < 0) return "";
    let t = lowerCache.get(i);
    if (t === undefined) { t = STR[i].toLowerCase(); lowerCache.set(i, t); }
    return t;
  }
  function replyBin(n) { let b = 0; while (b + 1 < REPLY_BINS.length && n >= REPLY_BINS[b + 1]) b++; return b; }
  function replyBinLabel(b) { return b + 1 < REPLY_BINS.length ? REPLY_BINS[b] + "-" + (REPLY_BINS[b + 1] - 1) : REPLY_BINS[b] + "+"; }
  function promptBin(n) { return Math.min(Math.floor(n / PROMPT_STEP), PROMPT_BINS - 1); }
  function promptBinLabel(b) { return b + 1 < PROMPT_BINS ? (b * PROMPT_STEP) + "-" + ((b + 1) * PROMPT_STEP - 1) : (b * PROMPT_STEP) + "+"; }

  // ------------------------------------------------------------------ filters and the URL
  function match(p, skip) {
    const cfg = F.config;
    if (cfg && skip !== "config") {
      const parent = D.retained_of[cfg];
      if (parent) { if (configOf(p) !== parent || p.jr !== 1) return false; }
      else if (configOf(p) !== cfg) return false;
    }
    if (F.split && D.splits[p.sp] !== F.split) return false;
    if (F.strategy && skip !== "strategy" && strategyName(p.s) !== F.strategy) return false;
    if (F.pred && skip !== "pred" && strategyName(p.rs) !== F.pred) return false;
    if (F.status && skip !== "status" && D.statuses[p.js] !== F.status) return false;
    if (F.error && skip !== "error") {
      const [side, label] = splitOnce(F.error);
      if (!hasVerdict(p)) return false;
      if (D.labels[side === "chosen" ? p.ce : p.re] !== label) return false;
    }
    if (F.flag) { const bit = FLAG_NAMES.indexOf(F.flag); if (bit < 0 || !(p.f & (1 << bit))) return false; }
    if (F.rlen && skip !== "rlen") {  // replies that are text: strategy pairs hold strategy names
      const [side, bin] = splitOnce(F.rlen);
      if (configOf(p) === "strategy_pairs") return false;
      if (replyBin(words(side === "chosen" ? p.c : p.r)) !== Number(bin)) return false;
    }
    if (F.plen && skip !== "plen" && promptBin(p.pt) !== Number(F.plen)) return false;
    if (F.q) {
      const q = F.q.toLowerCase();
      if (!(p.id.toLowerCase().includes(q) || lower(p.c).includes(q) || lower(p.r).includes(q) ||
            (p.cx !== undefined && lower(p.cx).includes(q)) || (p.rx !== undefined && lower(p.rx).includes(q)))) return false;
    }
    return true;
  }
  function splitOnce(value) { const i = value.indexOf(":"); return [value.slice(0, i), value.slice(i + 1)]; }
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    F = Object.assign({}, BLANK);
    for (const k of Object.keys(BLANK)) if (params.has(k)) F[k] = k === "page" ? Math.max(0, Math.floor(Number(params.get(k)) || 0)) : params.get(k);
  }
  function writeHash() {
    const params = new URLSearchParams();
    for (const k of Object.keys(BLANK)) if (F[k] !== BLANK[k]) params.set(k, String(F[k]));
    const hash = params.toString();
    if (location.hash.slice(1) !== hash) history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }
  function setFilter(changes) {
    Object.assign(F, changes, { page: 0 });
    if (!("pair" in changes)) F.pair = "";
    refresh();
  }

  // ------------------------------------------------------------------ overview
  function kv(rows) {
    return el("table", {}, el("tbody", {}, rows.filter(r => r).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
  }
  function countsTable(head, rows) {
    return el("table", {}, el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}, rows.map(r => el("tr", {}, r.map((c, i) => el("td", { class: i ? "num" : "" }, typeof c === "number" ? fmt(c) : c))))));
  }
  function failures(f) { const e = Object.entries(f || {}); return e.length ? e.map(([k, v]) => k + " " + v).join(", ") : "none"; }
  function renderOverview() {
    const o = D.overview, box = document.getElementById("overview");
    box.replaceChildren();
    if (o.complete === false) {
      const inc = o.incomplete || {};
      box.append(el("div", { class: "warning", id: "incomplete" }, el("strong", {}, "Incomplete build. "),
        (inc.requests ? fmt(inc.requests) + " requests failed with transient errors (" + failures(inc.transient_failures) + ") and have no answer. " : ""),
        inc.rerun ? el("span", {}, "Run the same command again to complete it: ", el("code", {}, inc.rerun)) : ""));
    }
    if (D.sample) box.append(el("div", { class: "warning", id: "sampled" }, "This page holds " + fmt(D.sample.n) +
      " of the build's " + fmt(D.sample.of) + " pairs (" + (D.sample.annotate ? "for annotation: response and joint pairs, one per dialogue; " : "") +
      "stratified by config, gold strategy and judge outcome; seed " + D.sample.seed + "): counts below the overview are the page's."));
    const src = o.source || {}, split = o.split || {};
    const grid = el("div", { class: "grid" });
    grid.append(el("div", { class: "card" }, el("h3", {}, "Build"), kv([
      ["name", (o.name || "") + " " + (o.version || "")],
      ["directory", o.directory],
      ["tool", o.tool ? o.tool.name + " " + o.tool.version : "-"],
      ["stage", o.stage || "-"],
      ["complete", o.complete === false ? "no" : "yes"],
      ["source", (src.source || "") + ": " + (src.file || "") + (src.sha256 ? " (sha256 " + src.sha256.slice(0, 16) + "...)" : "")],
      ["split", (split.method || "") + (split.limit ? ", first " + split.limit + " dialogues per split" : "") +
        (split.dialogues ? " (" + Object.entries(split.dialogues).map(([k, v]) => k + " " + v).join(", ") + ")" : "")],
      ["executor", o.executor ? o.executor.kind + (o.executor.kind === "ray" ? ", " + o.executor.workers + " workers" : "") : "-"],
      ["trim", o.trim ? JSON.stringify(o.trim) : "none"],
      ["prompt lengths", D.tokens.unit + (D.tokens.tokenizer ? " (" + D.tokens.tokenizer + ")" : "")],
    ])));
    const models = o.models || {};
    grid.append(el("div", { class: "card" }, el("h3", {}, "Models"), countsTable(["role", "engine", "model", "identity"],
      Object.entries(models).map(([role, m]) => [role, m.engine || "-", m.model || "-", m.identity || "-"]))));
    const sampling = o.sampling || {};
    const pol = sampling.policy || {}, jud = sampling.judge || {};
    grid.append(el("div", { class: "card" }, el("h3", {}, "Sampling"), kv([
      ["policy", "samples " + fmt(pol.samples) + ", temperature " + fmt(pol.temperature) + ", top_p " + fmt(pol.top_p)],
      ["max tokens", pol.max_tokens ? Object.entries(pol.max_tokens).map(([k, v]) => k + " " + v).join(", ") : "-"],
      ["judge", "temperature " + fmt(jud.temperature) + ", max tokens " + fmt(jud.max_tokens)],
    ])));
    const mining = o.mining || {};
    grid.append(el("div", { class: "card" }, el("h3", {}, "Mining requests"), countsTable(
      ["task", "requests", "cache hits", "sent", "prompt tok", "completion tok", "failures", "pairs", "cut at max_tokens"],
      Object.entries(mining).map(([task, m]) => { const a = m.accounting || {}; return [task.toUpperCase(), a.requests, a.cache_hits, a.sent,
        a.prompt_tokens, a.completion_tokens, failures(a.failures), Object.values(m.pairs || {}).reduce((x, y) => x + y, 0),
        Object.entries(m.outcomes || {}).filter(([k]) => k.endsWith("_trimmed")).reduce((x, [, v]) => x + v, 0)]; }))));
    const judge = o.judge || {};
    grid.append(el("div", { class: "card" }, el("h3", {}, "Judge"), countsTable(
      ["config", "requests", "cache hits", "judged", "failures", "retained", "status"],
      Object.entries(judge).map(([config, j]) => { const a = j.accounting || {}; return [config, a.requests, a.cache_hits, j.judged,
        failures(a.failures), j.retained !== undefined ? fmt(j.retained) + " (" + Math.round(100 * (j.retained_fraction || 0)) + "%)" : "-",
        Object.entries(j.status || {}).map(([k, v]) => k + " " + v).join(", ")]; }))));
    grid.append(el("div", { class: "card" }, el("h3", {}, "Rows per file"), countsTable(["config", ...D.splits],
      Object.entries(D.files).map(([config, s]) => [config, ...D.splits.map(x => s[x] === undefined ? "-" : s[x])]))));
    grid.append(el("div", { class: "card" }, el("h3", {}, "Flags (pairs worth a second look)"), countsTable(["flag", "pairs", "what"],
      D.flags.map(f => [el("a", { href: "#tab=pairs&flag=" + encodeURIComponent(f.name), "data-flag": f.name }, f.name), f.count, el("span", { class: "small muted" }, f.help)]))));
    box.append(grid);
  }

  // ------------------------------------------------------------------ filters
  function select(name, label, options) {
    const s = el("select", { id: "f-" + name, "data-filter": name, onchange: e => setFilter({ [name]: e.target.value }) },
      el("option", { value: "" }, "all"), options.map(([v, text]) => el("option", { value: v }, text)));
    return el("label", {}, label, s);
  }
  function renderFilters() {
    const box = document.getElementById("filters");
    const configs = [...D.configs.filter(c => D.pairs.some(p => configOf(p) === c)), ...Object.keys(D.retained_of)];
    const errors = [];
    for (const side of ["chosen", "rejected"]) for (const l of LABELS) errors.push([side + ":" + l, side + ": " + l]);
    const preds = D.strategies.map(s => [s, s]).concat([["(none)", "(none)"]]);
    box.replaceChildren(
      select("config", "config", configs.map(c => [c, c])),
      select("split", "split", D.splits.map(s => [s, s])),
      select("strategy", "gold strategy", D.strategies.map(s => [s, s])),
      select("pred", "rejected strategy", preds),
      select("status", "judge status", D.statuses.map(s => [s, s])),
      select("error", "error type", errors),
      select("flag", "flag", D.flags.map(f => [f.name, f.name + " (" + f.count + ")"])),
      select("rlen", "reply length (words)", ["chosen", "rejected"].flatMap(side => REPLY_BINS.map((_, b) => [side + ":" + b, side + " " + replyBinLabel(b)]))),
      select("plen", "prompt length", Array.from({ length: PROMPT_BINS }, (_, b) => [String(b), promptBinLabel(b)])),
      el("label", {}, "search", el("input", { id: "f-q", type: "search", placeholder: "text or id", "data-filter": "q",
        oninput: e => { F.q = e.target.value; F.page = 0; F.pair = ""; refresh(); } })),
    );
  }
  function syncFilters() {
    for (const name of FILTERS) {
      const input = document.getElementById("f-" + name);
      if (!input) continue;
      if (input.tagName === "SELECT" && F[name] && ![...input.options].some(o => o.value === F[name]))
        input.append(el("option", { value: F[name] }, F[name]));
      if (input.value !== F[name]) input.value = F[name];
    }
  }

  // ------------------------------------------------------------------ charts (SVG, each bar sets a filter)
  const COLORS = ["var(--c0)", "var(--c1)", "var(--c2)"];
  function barChart(title, id, groups, series, opts) {
    // groups: [{label, values: [n per series], filters: [changes per series]}]; horizontal bars
    const rowH = 16 * series.length + 6, left = opts && opts.left || 180, width = 200, top = series.length > 1 ? 18 : 4;
    const max = Math.max(1, ...groups.flatMap(g => g.values));
    const h = top + groups.length * rowH + 4;
    const s = svg("svg", { width: left + width + 50, height: h, viewBox: "0 0 " + (left + width + 50) + " " + h, id: id, role: "img", "aria-label": title });
    if (series.length > 1) series.forEach((name, j) => {
      s.append(svg("rect", { x: left + j * 120, y: 3, width: 10, height: 10, fill: COLORS[j] }));
      s.append(svg("text", { x: left + j * 120 + 14, y: 12 }, name));
    });
    groups.forEach((g, i) => {
      const y = top + i * rowH;
      s.append(svg("text", { x: left - 6, y: y + rowH / 2 + 3, "text-anchor": "end" }, g.label));
      g.values.forEach((v, j) => {
        const w = v ? Math.max(2, width * v / max) : 0;
        const change = g.filters[j];
        const active = change && Object.entries(change).every(([k, x]) => F[k] === x);
        const bar = svg("rect", { x: left, y: y + 3 + j * 16, width: w, height: 13, fill: COLORS[j % 3],
          class: "bar" + (active ? " active" : ""), "data-count": v, "data-filter": JSON.stringify(change),
          onclick: () => setFilter(active ? Object.fromEntries(Object.keys(change).map(k => [k, ""])) : change) },
          svg("title", {}, g.label + (series.length > 1 ? " / " + series[j] : "") + ": " + v));
        s.append(bar);
        s.append(svg("text", { x: left + w + 4, y: y + 13 + j * 16 }, fmt(v)));
      });
    });
    return el("div", { class: "card" }, el("h3", {}, title), s);
  }
  function renderCharts() {
    const box = document.getElementById("charts");
    box.replaceChildren();
    // 1. pairs by gold strategy per config (the configs the other filters leave)
    const rows = D.pairs.filter(p => match(p, "strategy"));
    const present = D.configs.filter(c => rows.some(p => configOf(p) === c));
    const byStrategy = D.strategies.map(s => ({ label: s, values: present.map(() => 0),
      filters: present.map(c => ({ strategy: s, config: D.retained_of[F.config] === c ? F.config : c })) }));
    for (const p of rows) { const j = present.indexOf(configOf(p)); if (p.s >= 0 && j >= 0) byStrategy[p.s].values[j]++; }
    box.append(barChart("Pairs by gold strategy", "chart-strategy", byStrategy.filter(g => g.values.some(v => v)), present));
    // 2. SP confusion: gold (rows) vs predicted (columns), over strategy_pairs
    box.append(confusion());
    // 3. judge status and error types
    const judged = D.pairs.filter(p => match(p, "status") && configOf(p) !== "strategy_pairs");
    const status = D.statuses.map((s, i) => ({ label: s, values: [judged.filter(p => p.js === i).length], filters: [{ status: s }] }))
      .filter(g => g.values[0] && g.label !== "not_applicable");
    box.append(barChart("Judge status (response and joint pairs)", "chart-status", status, ["pairs"]));
    const errRows = D.pairs.filter(p => match(p, "error") && hasVerdict(p));
    const errs = LABELS.map((l, i) => ({ label: l, values: [errRows.filter(p => p.ce === i).length, errRows.filter(p => p.re === i).length],
      filters: [{ error: "chosen:" + l }, { error: "rejected:" + l }] }));
    box.append(barChart("Judge's error type per reply", "chart-error", errs, ["chosen", "rejected"]));
    // 4. reply lengths
    const lenRows = D.pairs.filter(p => match(p, "rlen") && configOf(p) !== "strategy_pairs");
    const lens = REPLY_BINS.map((_, b) => ({ label: replyBinLabel(b) + " words", values: [0, 0], filters: [{ rlen: "chosen:" + b }, { rlen: "rejected:" + b }] }));
    for (const p of lenRows) { lens[replyBin(words(p.c))].values[0]++; lens[replyBin(words(p.r))].values[1]++; }
    let last = lens.length; while (last > 1 && !lens[last - 1].values.some(v => v)) last--;  // no empty tail
    box.append(barChart("Reply length, chosen vs rejected", "chart-rlen", lens.slice(0, last), ["chosen", "rejected"], { left: 110 }));
    // 5. prompt lengths against the bound
    box.append(promptChart());
  }
  function confusion() {
    // over strategy_pairs whatever the config filter (the other filters apply)
    const rows = D.pairs.filter(p => configOf(p) === "strategy_pairs" && match(p, "config"));
    const n = D.strategies.length, cell = 26, left = 180, top = 150;
    const counts = Array.from({ length: n }, () => Array(n + 1).fill(0));
    for (const p of rows) if (p.s >= 0) counts[p.s][p.rs >= 0 ? p.rs : n]++;
    const max = Math.max(1, ...counts.flat());
    const cw = left + (n + 1) * cell + 10, ch = top + n * cell + 10;
    const s = svg("svg", { width: cw, height: ch, viewBox: "0 0 " + cw + " " + ch, id: "chart-confusion", role: "img", "aria-label": "SP confusion" });
    const cols = [...D.strategies, "(none)"];
    cols.forEach((c, j) => s.append(svg("text", { x: left + j * cell + cell / 2, y: top - 6, transform: "rotate(-55 " + (left + j * cell + cell / 2) + " " + (top - 6) + ")" }, c)));
    D.strategies.forEach((g, i) => {
      s.append(svg("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, g));
      cols.forEach((c, j) => {
        const v = counts[i][j];
        const change = { config: "strategy_pairs", strategy: g, pred: c };
        const active = F.config === "strategy_pairs" && F.strategy === g && F.pred === c;
        s.append(svg("rect", { x: left + j * cell, y: top + i * cell, width: cell - 2, height: cell - 2,
          fill: i === j ? "#eee" : "rgba(192,80,77," + (v ? 0.12 + 0.88 * v / max : 0.04) + ")", class: "bar" + (active ? " active" : ""),
          "data-count": v, "data-filter": JSON.stringify(change), onclick: () => setFilter(active ? { strategy: "", pred: "" } : change) },
          svg("title", {}, "gold " + g + ", predicted " + c + ": " + v)));
        if (v) s.append(svg("text", { x: left + j * cell + cell / 2 - 1, y: top + i * cell + cell / 2 + 3, "text-anchor": "middle" }, v));
      });
    });
    const agreement = (((D.overview.mining || {}).sp || {}).agreement) || null;
    return el("div", { class: "card" }, el("h3", {}, "SP: gold vs predicted strategy (strategy pairs)"), s,
      el("div", { class: "small muted" }, "Rows: gold strategy; columns: the strategy the planner predicted (the rejected side). " +
        (agreement ? "The planner agreed with the gold strategy on " + fmt(agreement.agree) + " of " + fmt(agreement.answered) + " turns (no pair)." : "")));
  }
  function promptChart() {
    const rows = D.pairs.filter(p => match(p, "plen"));
    const counts = Array(PROMPT_BINS).fill(0);
    for (const p of rows) counts[promptBin(p.pt)]++;
    const bound = D.tokens.trim || D.tokens.trl_max_length;
    const left = 40, bw = 20, h = 150, top = 10, max = Math.max(1, ...counts);
    const pw = left + PROMPT_BINS * bw + 110, ph = top + h + 40;
    const s = svg("svg", { width: pw, height: ph, viewBox: "0 0 " + pw + " " + ph, id: "chart-plen", role: "img", "aria-label": "prompt lengths" });
    counts.forEach((v, b) => {
      const bh = v ? Math.max(2, h * v / max) : 0;
      const active = F.plen === String(b);
      s.append(svg("rect", { x: left + b * bw, y: top + h - bh, width: bw - 2, height: bh, fill: "var(--c0)", class: "bar" + (active ? " active" : ""),
        "data-count": v, "data-filter": JSON.stringify({ plen: String(b) }), onclick: () => setFilter({ plen: active ? "" : String(b) }) },
        svg("title", {}, promptBinLabel(b) + " " + D.tokens.unit + ": " + v)));
      if (b % 4 === 0) s.append(svg("text", { x: left + b * bw, y: top + h + 14 }, b * PROMPT_STEP));
    });
    const x = left + Math.min(bound / PROMPT_STEP, PROMPT_BINS) * bw;
    s.append(svg("line", { x1: x, x2: x, y1: top, y2: top + h, stroke: "var(--rejected)", "stroke-dasharray": "4 3" }));
    s.append(svg("text", { x: x + 3, y: top + 10 }, (D.tokens.trim ? "--trim-tokens " : "TRL max_length ") + bound));
    s.append(svg("text", { x: left, y: top + h + 30 }, "prompt " + D.tokens.unit + (D.tokens.tokenizer ? " (" + D.tokens.tokenizer + ")" : "")));
    return el("div", { class: "card" }, el("h3", {}, "Prompt length"), s);
  }

  // ------------------------------------------------------------------ the table and one pair
  function flagTags(p) { return FLAG_NAMES.filter((_, i) => p.f & (1 << i)).map(f => el("span", { class: "tag flag" }, f)); }
  function judgeCell(p) {
    if (!hasVerdict(p)) return D.statuses[p.js] || "";
    return p.jr ? "retained" : "not retained";
  }
  function renderTable() {
    const table = document.getElementById("table");
    table.tHead.replaceChildren(el("tr", {}, ["id", "config", "split", "gold", "rejected strategy", "judge", "flags", "rejected reply"].map(h => el("th", {}, h))));
    const start = F.page * PAGE;
    table.tBodies[0].replaceChildren(...matched.slice(start, start + PAGE).map(p => el("tr", {
      "data-key": keyOf(p), class: keyOf(p) === F.pair ? "selected" : "", onclick: () => { F.pair = keyOf(p); refresh(); } },
      el("td", {}, p.id), el("td", {}, configOf(p)), el("td", {}, D.splits[p.sp]), el("td", {}, strategyName(p.s)),
      el("td", {}, strategyName(p.rs)), el("td", {}, judgeCell(p)), el("td", {}, flagTags(p)), el("td", { class: "text", title: STR[p.r] }, STR[p.r]))));
    const pages = Math.max(1, Math.ceil(matched.length / PAGE));
    document.getElementById("pager").replaceChildren(
      el("button", { type: "button", id: "prev-page", disabled: F.page <= 0, onclick: () => { F.page--; refresh(); } }, "previous"),
      el("span", {}, "page " + (F.page + 1) + " of " + pages),
      el("button", { type: "button", id: "next-page", disabled: F.page + 1 >= pages, onclick: () => { F.page++; refresh(); } }, "next"));
  }
  function chat(p, limit) {
    // the dialogue up to the turn (or, when it could not be rebuilt, the pair's own history as sent)
    const own = p.hist !== undefined;
    const messages = own ? p.hist.map(([speaker, text]) => [speaker, text, -1]) : (D.dialogues[String(p.d)] || []);
    const upto = own ? messages.length : (p.at >= 0 ? p.at : 0);
    const from = limit && upto > limit ? upto - limit : 0;
    const box = el("div", { class: "chat" });
    if (own) box.append(el("div", { class: "muted small" }, "(the history as this pair's prompt holds it: the build has no joint rows to rebuild its dialogue from)"));
    if (from > 0) box.append(el("button", { type: "button", class: "button small", onclick: e => { e.target.parentNode.replaceWith(chat(p, 0)); } },
      "show the " + from + " earlier messages"));
    messages.slice(from, upto).forEach(([speaker, text, strategy], k) => {
      const i = from + k;
      if (p.seen && i === p.seen) box.append(el("div", { class: "divider small" }, "the prompt starts here: --trim-tokens dropped what is above"));
      const unseen = p.seen && i < p.seen ? " unseen" : "";
      if (!speaker && !STR[text].trim()) {  // the conversion puts an empty seeker message between two supporter turns
        box.append(el("div", { class: "marker small" + unseen }, "(no seeker message between two supporter turns)"));
        return;
      }
      box.append(el("div", { class: "bubble " + (speaker ? "assistant" : "user") + unseen },
        el("span", { class: "who" }, speaker ? "supporter" + (strategy >= 0 ? " · " + D.strategies[strategy] : "") : "seeker"), STR[text]));
    });
    if (!upto) box.append(el("div", { class: "muted small" }, "(the first turn: no history)"));
    return box;
  }
  function verdict(p, side) {
    if (!hasVerdict(p)) return el("div", { class: "small muted" }, "judge: " + (D.statuses[p.js] || "none"));
    const label = D.labels[side === "chosen" ? p.ce : p.re], why = side === "chosen" ? p.cx : p.rx;
    return el("div", { class: "small" }, el("span", { class: "tag " + (label === "None" ? "ok" : "bad") }, "judge: " + (label === "None" ? "no error" : label)),
      why >= 0 ? el("div", { class: "muted" }, STR[why]) : null);
  }
  function renderDetail() {
    const box = document.getElementById("detail");
    const p = byKey.get(F.pair);
    if (!p) { box.replaceChildren(el("div", { class: "card muted" }, "Click a pair (or press j) to read it.")); return; }
    const system = D.systems[configOf(p)];
    const miner = D.miners[p.mn] || {};
    box.replaceChildren(el("div", { class: "card", id: "pair", "data-key": keyOf(p) },
      el("h2", {}, p.id + " · " + configOf(p) + " · " + D.splits[p.sp]),
      el("div", { class: "small" }, el("span", { class: "tag" }, "gold: " + strategyName(p.s)), el("span", { class: "tag" }, "emotion: " + (D.emotions[p.e] || "-")),
        el("span", { class: "tag" }, "problem: " + (D.problems[p.p] || "-")), el("span", { class: "tag" }, "prompt: " + fmt(p.pt) + " " + D.tokens.unit + ", " + p.pm + " messages"),
        hasVerdict(p) ? el("span", { class: "tag " + (p.jr ? "ok" : "bad") }, p.jr ? "retained" : "not retained") : el("span", { class: "tag" }, "judge: " + D.statuses[p.js]), flagTags(p)),
      system !== undefined ? el("details", {}, el("summary", {}, "system prompt"), el("div", { class: "system" }, STR[system])) : null,
      chat(p, 8),
      el("div", { class: "replies" },
        el("div", { class: "reply chosen" }, el("strong", {}, "chosen (gold) · " + strategyName(p.s)), el("div", { class: "text", id: "chosen-text" }, STR[p.c]), verdict(p, "chosen")),
        el("div", { class: "reply rejected" }, el("strong", {}, "rejected · " + strategyName(p.rs)), el("div", { class: "text", id: "rejected-text" }, STR[p.r]), verdict(p, "rejected"))),
      el("div", { class: "small muted" }, "miner: " + [miner.engine, miner.model, "temperature " + miner.temperature, "top_p " + miner.top_p].join(", ") +
        (p.jm ? "; judge: " + p.jm : ""))));
  }
  function move(step) {
    if (!matched.length) return;
    let i = matched.findIndex(p => keyOf(p) === F.pair);
    i = i < 0 ? (step > 0 ? 0 : matched.length - 1) : Math.min(matched.length - 1, Math.max(0, i + step));
    F.pair = keyOf(matched[i]);
    F.page = Math.floor(i / PAGE);
    refresh();
  }

  // ------------------------------------------------------------------ annotate mode (blind)
  // Answers are kept per page (the fingerprint names its pairs and their replies) and per annotator, in the
  // browser's storage: another build's page, or another person in the same browser, never sees them.
  const STORE = "ipm-view-annotations:" + D.fingerprint;
  let A = loadStore();
  let queue = null, at = 0;
  function loadStore() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE) || "null");
      if (s && s.by && typeof s.by === "object") return { annotator: String(s.annotator || ""), by: s.by };
    } catch (e) { /* private mode, damaged value */ }
    return { annotator: "", by: {} };
  }
  function saveStore() { try { localStorage.setItem(STORE, JSON.stringify(A)); } catch (e) { /* storage full or disabled: export still works */ } }
  const mine = () => A.by[A.annotator] || {};
  function annotationQueue() {
    // one response or joint pair per dialogue: two pairs of one turn share their gold reply, and a later turn
    // shows an earlier one's gold in its history; so a second pair of a dialogue would tell which reply is gold
    if (!queue) {
      const best = new Map();
      for (const p of D.pairs) {
        if (configOf(p) === "strategy_pairs") continue;
        const old = best.get(p.d);
        if (!old || fnv(keyOf(p)) < fnv(keyOf(old)) || (fnv(keyOf(p)) === fnv(keyOf(old)) && keyOf(p) < keyOf(old))) best.set(p.d, p);
      }
      queue = [...best.values()].sort((a, b) => fnv(keyOf(a)) - fnv(keyOf(b)) || (keyOf(a) < keyOf(b) ? -1 : 1));
    }
    return queue;
  }
  const complete = a => a && a.labels && a.labels.chosen && a.labels.rejected;
  function answer(p, change) {
    if (!A.annotator) return;
    const key = keyOf(p), answers = A.by[A.annotator] = mine();
    const a = answers[key] || { id: p.id, config: configOf(p), labels: {}, preference: null };
    if (change.label) a.labels[change.label[0]] = change.label[1];
    if ("preference" in change) a.preference = change.preference;
    a.time = new Date().toISOString();
    a.order = p.ab ? "rejected-first" : "chosen-first";
    a.pair_sha256 = p.h;
    answers[key] = a;
    saveStore();
  }
  function exportLines() {
    const answers = mine();
    return annotationQueue().map(p => answers[keyOf(p)]).filter(complete).map(a => JSON.stringify({
      id: a.id, config: a.config, labels: { chosen: a.labels.chosen, rejected: a.labels.rejected }, preference: a.preference || null,
      annotator: A.annotator, time: a.time, order: a.order, pair_sha256: a.pair_sha256 })).join("\n");
  }
  function download() {
    const text = exportLines();
    const blob = new Blob([text ? text + "\n" : ""], { type: "application/x-ndjson" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "annotations.jsonl" });
    document.body.append(a); a.click(); a.remove();
  }
  function importFile(file) {
    file.text().then(text => {
      let taken = 0, other = 0, stale = 0;
      const names = new Set();
      for (const line of text.split("\n")) {
        if (!line.trim()) continue;
        let r; try { r = JSON.parse(line); } catch (e) { other++; continue; }
        const p = r && byKey.get(r.config + "/" + r.id);
        if (!p || !r.labels || typeof r.annotator !== "string" || !r.annotator) { other++; continue; }
        if (r.pair_sha256 && r.pair_sha256 !== p.h) { stale++; continue; }  // the same id in another build
        const answers = A.by[r.annotator] = A.by[r.annotator] || {};
        const old = answers[keyOf(p)];
        if (old && old.time && r.time && old.time > r.time) continue;
        answers[keyOf(p)] = { id: r.id, config: r.config, labels: { chosen: r.labels.chosen, rejected: r.labels.rejected },
          preference: r.preference || null, time: r.time, order: r.order, pair_sha256: p.h };
        names.add(r.annotator);
        taken++;
      }
      if (!A.annotator && names.size === 1) A.annotator = [...names][0];
      saveStore();
      renderAnnotate();
      document.getElementById("import-note").textContent = taken + " answers imported (" + [...names].join(", ") + ")" +
        (stale ? "; " + stale + " skipped: they label other replies (another build)" : "") + (other ? "; " + other + " lines not for this page" : "") +
        (names.size && !names.has(A.annotator) ? "; type one of those names to go on with their answers" : "");
    });
  }
  function radio(name, value, checked, onchange, text) {
    return el("label", {}, el("input", { type: "radio", name: name, value: value, checked: checked, disabled: !A.annotator, onchange: onchange }), " " + text);
  }
  function renderAnnotate() {
    const box = document.getElementById("annotate");
    const q = annotationQueue(), answers = mine();
    const done = q.filter(p => complete(answers[keyOf(p)])).length;
    at = Math.min(Math.max(0, at), Math.max(0, q.length - 1));
    const p = q[at];
    const name = el("input", { id: "annotator", type: "text", value: A.annotator, placeholder: "your name",
      oninput: e => {  // answers can be given at once; the page shows this annotator's own answers on change
        A.annotator = e.target.value.trim(); saveStore();
        for (const x of document.querySelectorAll("#annotate input[type=radio], #export")) x.disabled = !A.annotator;
      },
      onchange: () => renderAnnotate() });
    const toolbar = el("div", { class: "toolbar" }, el("label", {}, "annotator ", name),
      el("span", { id: "progress-text" }, done + " of " + q.length + " pairs annotated"),
      el("button", { type: "button", class: "button", id: "export", disabled: !A.annotator, onclick: download }, "Download annotations.jsonl"),
      el("label", { class: "button" }, "Import annotations.jsonl ", el("input", { type: "file", id: "import", accept: ".jsonl,.json,.txt",
        style: "display:none", onchange: e => e.target.files[0] && importFile(e.target.files[0]) })),
      el("span", { id: "import-note", class: "small muted" }));
    const bar = el("div", { class: "progress" }, el("div", { style: "width:" + (q.length ? (100 * done / q.length).toFixed(1) : 0) + "%" }));
    if (!p) { box.replaceChildren(toolbar, el("div", { class: "card muted" }, "No response or joint pairs in this page to annotate.")); return; }
    const key = keyOf(p), a = answers[key] || { labels: {} };
    const sides = p.ab ? ["rejected", "chosen"] : ["chosen", "rejected"];
    const reply = (side, letter) => el("div", { class: "reply", id: "reply-" + letter }, el("strong", {}, "Reply " + letter),
      el("div", { class: "text" }, STR[side === "chosen" ? p.c : p.r]),
      el("div", { class: "choice", role: "radiogroup", "aria-label": "errors of reply " + letter },
        LABELS.map(l => radio("label-" + letter, l, a.labels[side] === l, () => { answer(p, { label: [side, l] }); renderAnnotate(); }, l === "None" ? "no error" : l))));
    const pref = a.preference === "tie" ? "tie" : a.preference ? (a.preference === sides[0] ? "A" : "B") : null;
    box.replaceChildren(toolbar, bar, el("div", { class: "card", id: "annotate-pair", "data-key": key },
      el("h2", {}, "Pair " + (at + 1) + " of " + q.length),
      A.annotator ? el("div", { class: "small muted" }, "Read the conversation, then label each reply: does it show an error, and which? Then say which reply you prefer. Keys: a / b / t prefer, n / p next / previous.")
        : el("div", { class: "warning", id: "name-first" }, "Type your name above first: answers are kept, and exported, under it."),
      chat(p, 10),
      el("div", { class: "replies" }, reply(sides[0], "A"), reply(sides[1], "B")),
      el("div", { class: "choice", id: "preference", role: "radiogroup", "aria-label": "preference" }, el("strong", {}, "Preferred: "),
        [["A", sides[0]], ["B", sides[1]], ["tie", "tie"]].map(([l, v]) => radio("preference", l, pref === l, () => { answer(p, { preference: v }); renderAnnotate(); }, l))),
      el("div", { class: "toolbar" },
        el("button", { type: "button", class: "button", id: "previous-pair", disabled: at === 0, onclick: () => { at--; renderAnnotate(); } }, "previous"),
        el("button", { type: "button", class: "button", id: "next-pair", disabled: at + 1 >= q.length, onclick: () => { at++; renderAnnotate(); } }, "next"),
        el("button", { type: "button", class: "button", id: "next-open", onclick: () => {
          const i = q.findIndex((x, j) => j > at && !complete(answers[keyOf(x)]));
          if (i >= 0) { at = i; renderAnnotate(); } } }, "next unannotated"))));
  }

  // ------------------------------------------------------------------ tabs, refresh, keys
  const blindOnly = document.body.dataset.mode === "annotate";
  function showTab(tab) {
    if (blindOnly) tab = "annotate";
    for (const b of document.querySelectorAll("#tabs button")) {
      b.setAttribute("aria-selected", String(b.dataset.tab === tab));
      if (blindOnly && b.dataset.tab !== "annotate") b.hidden = true;
    }
    for (const id of ["overview", "pairs", "annotate"]) document.getElementById(id).hidden = id !== tab;
  }
  function currentTab() { return F.tab || (blindOnly ? "annotate" : "pairs"); }
  function refresh() {
    const tab = currentTab();
    showTab(tab);
    if (tab === "pairs") {
      matched = D.pairs.filter(p => match(p));
      const pages = Math.max(1, Math.ceil(matched.length / PAGE));
      if (F.page >= pages) F.page = pages - 1;
      const count = document.getElementById("count");
      count.textContent = fmt(matched.length) + " pairs" + (D.sample ? " (of a sample of " + fmt(D.sample.n) + ")" : "");
      count.dataset.count = String(matched.length);
      syncFilters();
      renderCharts();
      renderTable();
      renderDetail();
    } else if (tab === "annotate") renderAnnotate();
    writeHash();
  }
  document.getElementById("tabs").addEventListener("click", e => {
    const tab = e.target.dataset && e.target.dataset.tab;
    if (tab) { F.tab = tab === "pairs" ? "" : tab; refresh(); }
  });
  document.getElementById("clear").addEventListener("click", () => { const tab = F.tab; F = Object.assign({}, BLANK, { tab: tab }); refresh(); });
  document.addEventListener("keydown", e => {
    const t = e.target, typing = t.tagName === "SELECT" || t.tagName === "TEXTAREA" ||
      (t.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(t.type));
    if (typing || e.ctrlKey || e.metaKey || e.altKey) {
      if (e.key === "Escape" && e.target.blur) e.target.blur();
      return;
    }
    const tab = currentTab();
    if (tab === "pairs") {
      if (e.key === "j" || e.key === "ArrowDown") { move(1); e.preventDefault(); }
      else if (e.key === "k" || e.key === "ArrowUp") { move(-1); e.preventDefault(); }
      else if (e.key === "n" && (F.page + 1) * PAGE < matched.length) { F.page++; refresh(); }
      else if (e.key === "p" && F.page > 0) { F.page--; refresh(); }
      else if (e.key === "/") { document.getElementById("f-q").focus(); e.preventDefault(); }
      else if (e.key === "Escape") { F.pair = ""; refresh(); }
    } else if (tab === "annotate") {
      const q = annotationQueue(), p = q[at];
      if (!p) return;
      const sides = p.ab ? ["rejected", "chosen"] : ["chosen", "rejected"];
      if (e.key === "a" || e.key === "b" || e.key === "t") { answer(p, { preference: e.key === "t" ? "tie" : sides[e.key === "a" ? 0 : 1] }); renderAnnotate(); }
      else if ((e.key === "n" || e.key === "ArrowRight") && at + 1 < q.length) { at++; renderAnnotate(); }
      else if ((e.key === "p" || e.key === "ArrowLeft") && at > 0) { at--; renderAnnotate(); }
    }
  });
  window.addEventListener("hashchange", () => { readHash(); refresh(); });

  readHash();
  renderOverview();
  renderFilters();
  refresh();
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  document.body.dataset.ready = "true";
})();
