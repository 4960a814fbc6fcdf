// tutorforge console: plain JS, no build step, no external resources. Every URL is relative to the
// page, so the console works under any path prefix. Pages are hash routes (#/chat, #/jobs/ID, ...).
"use strict";

const TOKEN_KEY = "tutorforge.token";
const RECENT_KEY = "tutorforge.evaluations";
const POLL_MS = 3000;
const COLORS = ["#0b5394", "#b35900", "#1d6b1d", "#7a1f7a"];
const TERMINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"]);
let poll = null;

// ----- DOM helpers (text only: nothing from the server is parsed as HTML)

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function table(headers, rows, numeric = []) {
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((name, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, name)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) => h("td", { class: numeric.includes(i) ? "num" : null }, cell)))))));
}

function fmt(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : (value ?? "");
}

function when(seconds) {
  return seconds ? new Date(Number(seconds) * 1000).toLocaleString() : "";
}

function status(message, ok = false) {
  const box = document.getElementById("status");
  box.className = ok ? "ok" : "";
  box.textContent = message || "";
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined));
}

// ----- the API, with the bearer token when one is set

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra = {}) {
  return token() ? { ...extra, Authorization: `Bearer ${token()}` } : extra;
}

class ApiError extends Error {}

async function failure(response) {
  if (response.status === 401) {
    return new ApiError("The server refused the API token (401 Unauthorized). Enter the server's API token in the " +
      "\"API token\" field above and choose \"Use token\".");
  }
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body.error?.message || (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) || message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(message);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) throw await failure(response);
  return response;
}

async function json(path, options) {
  return (await api(path, options)).json();
}

// ----- chart: an SVG line chart of named series of [x, y] points

function lineChart(title, series) {
  const names = Object.keys(series);
  const points = names.flatMap((name) => series[name]);
  const W = 640, H = 280, L = 56, R = 16, T = 16, B = 40;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => L + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (y1 === y0 ? 0.5 : 1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const last = names.map((name) => `${name} ${fmt(series[name][series[name].length - 1][1])}`).join(", ");
  for (const [k, v] of Object.entries({ viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `${title}: ${last}` })) svg.setAttribute(k, v);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#333" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#333" });
  for (const y of [y0, (y0 + y1) / 2, y1]) add("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end", "font-size": 12, fill: "#1a1a1a" }, fmt(y));
  for (const x of [x0, x1]) add("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle", "font-size": 12, fill: "#1a1a1a" }, fmt(x, 0));
  names.forEach((name, i) => {
    const line = series[name].map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    add("polyline", { points: line, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": name });
    if (series[name].length === 1) add("circle", { cx: sx(series[name][0][0]), cy: sy(series[name][0][1]), r: 3, fill: COLORS[i % COLORS.length] });
  });
  const legend = h("ul", { class: "legend" }, names.map((name, i) =>
    h("li", {}, h("span", { class: `swatch c${i % COLORS.length}` }), `${name} (${series[name].length} points)`)));
  const data = h("details", {}, h("summary", {}, `${title}: data`),
    table(["series", "x", "value"], names.flatMap((name) => series[name].map(([x, y]) => [name, fmt(x, 0), fmt(y, 4)])), [1, 2]));
  return h("figure", {}, h("figcaption", {}, h("strong", {}, title)), svg, legend, data);
}

// ----- chat

const chat = { messages: [], busy: false };

function tutorOptions(tutors) {
  const options = [h("option", { value: JSON.stringify({ model: "base", program: "" }) }, `Base model (${tutors.base_model})`)];
  for (const name of tutors.adapters) options.push(h("option", { value: JSON.stringify({ model: name, program: "" }) }, `Adapter: ${name}`));
  for (const program of tutors.programs) {
    const label = `${program.name}@${program.version}`;
    options.push(h("option", { value: JSON.stringify({ model: "base", program: label }) },
      `Program: ${label}${program.adapter ? ` (its adapter ${program.adapter})` : ""}`));
    for (const name of tutors.adapters) {
      options.push(h("option", { value: JSON.stringify({ model: name, program: label }) }, `Adapter ${name} + program ${label}`));
    }
  }
  return options;
}

function citationList(citations) {
  if (!citations.length) return h("p", { class: "muted" }, "No passage cited.");
  return h("ol", {}, citations.map((c) => h("li", { class: "citation" },
    h("span", {}, `${c.tag} `, h("strong", {}, c.source || c.document_id), ` · score ${fmt(c.score)}`),
    h("blockquote", {}, c.text))));
}

function turnNode(role, text) {
  const body = h("p", { class: "text" }, text);
  const main = h("div", {}, h("p", { class: "who" }, role === "user" ? "You" : "Tutor"), body);
  const node = h("li", { class: `turn ${role}` }, main);
  return { node, body };
}

async function renderChat() {
  const tutor = h("select", { id: "tutor" });
  const retrieval = h("input", { id: "retrieval", type: "checkbox", checked: true });
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: 1, max: 2048, value: 200 });
  const log = h("ol", { id: "conversation", class: "conversation", "aria-live": "polite", "aria-label": "Conversation" });
  const question = h("textarea", { id: "question", required: true, "aria-describedby": "question-help" });
  const send = h("button", { id: "send", type: "submit" }, "Send");
  const reset = h("button", { id: "new-conversation", type: "button", class: "secondary" }, "New conversation");
  const note = h("p", { class: "muted" });
  const form = h("form", { class: "composer" },
    h("label", { for: "question" }, "Your question"), question,
    h("p", { id: "question-help", class: "muted" }, "Enter sends, Shift+Enter starts a new line."),
    h("div", { class: "actions" }, send, reset));
  show(h("h2", {}, "Tutor chat"),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "tutor" }, "Tutor"), tutor),
      h("div", {}, h("label", { for: "max-tokens" }, "Max reply tokens"), maxTokens),
      h("div", {}, h("span", {}, retrieval, " ", h("label", { for: "retrieval" }, "Cite course material")))),
    note, log, form);
  for (const message of chat.messages) {
    const { node } = turnNode(message.role, message.content);
    log.append(node);
  }
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  reset.addEventListener("click", () => {
    chat.messages = [];
    log.replaceChildren();
    question.focus();
    status("New conversation started.", true);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text || chat.busy) return;
    question.value = "";
    ask(text, JSON.parse(tutor.value), retrieval.checked, Number(maxTokens.value) || 200, log, send);
  });
  try {
    const tutors = await json("console/api/tutors");
    tutor.replaceChildren(...tutorOptions(tutors));
    note.textContent = tutors.note ? `Programs unavailable: ${tutors.note}` : "";
    status("");
  } catch (error) {
    tutor.replaceChildren(h("option", { value: JSON.stringify({ model: "base", program: "" }) }, "Base model"));
    status(error.message);
  }
  question.focus();
}

async function ask(text, choice, retrieval, maxTokens, log, send) {
  chat.busy = true;
  send.disabled = true;
  chat.messages.push({ role: "user", content: text });
  log.append(turnNode("user", text).node);
  const reply = turnNode("assistant", "");
  reply.body.setAttribute("aria-busy", "true");
  const sources = h("aside", { class: "citations", "aria-label": "Cited passages" }, h("h3", {}, "Sources"), h("p", { class: "muted" }, "…"));
  reply.node.append(sources);
  log.append(reply.node);
  let content = "";
  try {
    const body = { model: choice.model, messages: chat.messages, stream: true, max_tokens: maxTokens, retrieval };
    if (choice.program) body.program = choice.program;
    const response = await api("v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error.message);
        if (chunk.citations) sources.replaceChildren(h("h3", {}, "Sources"), citationList(chunk.citations));
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) {
          content += delta;
          reply.body.textContent = content;
        }
      }
    }
    chat.messages.push({ role: "assistant", content });
    status("");
  } catch (error) {
    // The question stays out of the history when no reply came back, so it can be asked again.
    chat.messages.pop();
    reply.body.textContent = content || "(no reply)";
    status(error.message);
  } finally {
    reply.body.removeAttribute("aria-busy");
    chat.busy = false;
    send.disabled = false;
    document.getElementById("question")?.focus();
  }
}

// ----- documents

async function renderDocuments() {
  const data = await json("console/api/documents");
  const query = h("input", { id: "search-query", type: "search", required: true });
  const mode = h("select", { id: "search-mode" }, ["dense", "hybrid", "sparse"].map((m) => h("option", { value: m }, m)));
  const limit = h("input", { id: "search-limit", type: "number", min: 1, max: 20, value: 5 });
  const results = h("div", { id: "search-results", "aria-live": "polite" });
  const form = h("form", { role: "search" },
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "search-query" }, "Search the material"), query),
      h("div", {}, h("label", { for: "search-mode" }, "Mode"), mode),
      h("div", {}, h("label", { for: "search-limit" }, "Hits"), limit),
      h("button", { type: "submit" }, "Search")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const params = new URLSearchParams({ q: query.value, limit: limit.value, mode: mode.value });
      const found = await json(`console/api/search?${params}`);
      results.replaceChildren(found.hits.length ? table(["score", "source", "document", "chunk", "text"],
        found.hits.map((hit) => [fmt(hit.score), hit.metadata?.source || "", hit.document_id, hit.chunk_index, hit.text]), [0, 3])
        : h("p", {}, "No hits."));
      status("");
    } catch (error) { status(error.message); }
  });
  const stats = data.stats;
  show(h("h2", {}, "Documents"),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, stats.documents), "documents"),
      h("div", { class: "card" }, h("strong", {}, stats.chunks), "chunks"),
      h("div", { class: "card" }, h("strong", {}, stats.embedding_model), `${stats.embedding_dimensions} dimensions, ${stats.store_backend}`)),
    form, results,
    h("h3", {}, "Per subject"), table(["subject", "documents"], data.per_subject.map((r) => [r.name, r.count]), [1]),
    h("h3", {}, "Per source"), table(["source", "documents"], data.per_source.map((r) => [r.name, r.count]), [1]),
    h("details", {}, h("summary", {}, `All ${data.listed} documents`),
      table(["document", "file", "subject", "chunks", "ingested"],
        data.documents.map((d) => [d.document_id, d.filename, d.metadata?.category || "", d.chunk_count, when(d.ingested_at_unix)]), [3])));
}

// ----- datasets

async function renderDatasets() {
  const data = await json("console/api/datasets");
  show(h("h2", {}, "Datasets"), data.datasets.length ? table(["dataset", "version", "created", "records", "train", "validation", "dropped"],
    data.datasets.map((d) => [
      h("a", { href: `#/datasets/${encodeURIComponent(d.name)}/${encodeURIComponent(d.version)}` }, d.name), d.version,
      when(d.created_at_unix), d.stats.records, d.stats.train_records, d.stats.validation_records,
      Object.values(d.manifest.dropped_by_reason).reduce((a, b) => a + b, 0),
    ]), [3, 4, 5, 6]) : h("p", {}, "No dataset yet."));
}

async function renderDataset(name, version) {
  const data = await json(`console/api/datasets/${encodeURIComponent(name)}?version=${encodeURIComponent(version || "")}`);
  const d = data.dataset;
  const samples = data.samples.map((line, i) => {
    const record = JSON.parse(line);
    const text = (record.messages || record.conversations || []).map((m) => `${m.role}: ${m.content}`).join("\n\n");
    return h("details", {}, h("summary", {}, `Sample dialogue ${i + 1}`), h("pre", { class: "dialogue" }, text));
  });
  show(h("h2", {}, `Dataset ${d.name}@${d.version}`),
    h("p", {}, d.description, " ", h("span", { class: "muted" }, when(d.created_at_unix))),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, d.stats.records), "records"),
      h("div", { class: "card" }, h("strong", {}, `${d.stats.train_records} / ${d.stats.validation_records}`), "train / validation"),
      h("div", { class: "card" }, h("strong", {}, fmt(d.stats.question_rate, 2)), "question rate"),
      h("div", { class: "card" }, h("strong", {}, fmt(d.stats.mean_tokens, 0)), "mean tokens")),
    h("h3", {}, "Sources"), table(["source", "read", "kept", "dropped", "reasons"],
      d.manifest.sources.map((s) => [s.source, s.records_read, s.records_kept, s.records_dropped,
        Object.entries(s.dropped_by_reason).map(([k, v]) => `${k}: ${v}`).join(", ")]), [1, 2, 3]),
    h("h3", {}, "Dropped records (first 50)"), table(["source", "index", "reason"],
      d.manifest.dropped.map((r) => [r.source, r.index, r.reason]), [1]),
    h("h3", {}, "Sample dialogues"), samples);
}

// ----- jobs

const stateName = (state) => String(state || "").replace("JOB_STATE_", "").toLowerCase();

async function renderJobs() {
  const data = await json("console/api/jobs");
  const id = h("input", { id: "job-id", required: true, placeholder: "trai-…, opti-…, eval-…, data-…" });
  const form = h("form", {}, h("div", { class: "row" }, h("div", {}, h("label", { for: "job-id" }, "Open a job by id"), id),
    h("button", { type: "submit" }, "Open")));
  form.addEventListener("submit", (event) => { event.preventDefault(); location.hash = `#/jobs/${encodeURIComponent(id.value.trim())}`; });
  // Every job-running service lists its jobs the same way (ListJobs): one table per service.
  const jobTable = (service, title) => {
    const jobs = data[service] || [];
    const note = data.notes[service];
    return [h("h3", {}, title), note ? h("p", { class: "muted" }, note) : null,
      jobs.length ? table(["job", "kind", "state", "progress", "about", "message", "updated"],
        jobs.map((j) => [h("a", { href: `#/jobs/${j.id}` }, j.id), j.kind, stateName(j.state), `${Math.round(j.progress * 100)}%`,
          j.labels.adapter || j.labels.adapter_name || j.labels.program || j.labels.dataset || j.labels.name || "", j.message,
          j.updated_at ? new Date(j.updated_at).toLocaleString() : ""]), [3])
        : note ? null : h("p", {}, `No ${title.toLowerCase()} job yet.`)];
  };
  show(h("h2", {}, "Jobs"), form,
    ...jobTable("training", "Training"), ...jobTable("optimization", "Optimization"), ...jobTable("datasets", "Dataset"));
}

async function renderJob(id) {
  const data = await json(`console/api/jobs/${encodeURIComponent(id)}`);
  const job = data.job;
  const curves = Object.entries(data.curves);
  const isTraining = job.kind === "training";
  const charts = [];
  if (isTraining && curves.length) charts.push(lineChart("Loss by step", data.curves));
  if (!isTraining && curves.length) charts.push(lineChart("Score by update", data.curves));
  const links = [];
  if (job.kind === "evaluation" && job.result) links.push(h("p", {}, h("a", { href: `#/evaluations/${encodeURIComponent(job.result)}` }, "Open the evaluation report")));
  show(h("h2", {}, `${job.kind} job ${job.id}`),
    h("p", {}, h("strong", { id: "job-state" }, stateName(job.state)), " ",
      h("progress", { max: 1, value: job.progress, "aria-label": "Progress" }), ` ${Math.round(job.progress * 100)}% · ${job.message}`),
    job.error ? h("p", { class: "muted" }, `Error: ${job.error}`) : null,
    job.result ? h("p", {}, `Result: ${job.result}`) : null, links,
    h("div", { id: "curves" }, charts.length ? charts : h("p", {}, "No curve yet.")),
    h("h3", {}, "Latest metrics"), table(["metric", "value"], Object.entries(job.metrics).map(([k, v]) => [k, fmt(v, 4)]), [1]),
    h("h3", {}, "Labels"), table(["label", "value"], Object.entries(job.labels)),
    h("details", {}, h("summary", {}, "Parameters"), h("pre", { class: "dialogue" }, job.parameters_json)),
    h("h3", {}, "Events (latest 20)"), table(["#", "state", "step", "message"],
      data.events.slice(-20).reverse().map((e) => [e.sequence, stateName(e.state), e.total_steps ? `${e.step}/${e.total_steps}` : "", e.message]), [0]));
  if (!TERMINAL.has(job.state)) poll = setTimeout(() => route(true), POLL_MS);
}

// ----- adapters

async function renderAdapters() {
  const data = await json("console/api/adapters");
  const act = async (name, verb) => {
    try {
      await json(`console/api/adapters/${encodeURIComponent(name)}/${verb}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      });
      await renderAdapters();
      status(`${name}: ${verb}ed.`, true);
    } catch (error) { status(error.message); }
  };
  const pairs = (group) => Object.entries(group).map(([k, v]) => `${k}: ${v}`).join("\n");
  show(h("h2", {}, "Adapters"), h("p", { class: "muted" }, `Base model ${data.base_model} · engine ${data.engine}`),
    data.adapters.length ? table(["adapter", "version", "loaded", "rank", "trained on", "training", "benchmark", ""],
      data.adapters.map((a) => [
        a.name, a.version, a.loaded ? "yes" : "no", a.rank,
        h("span", {}, a.lineage.data.dataset ? `${a.lineage.data.dataset}@${a.lineage.data.dataset_version || "?"}` : "",
          a.lineage.data.job_id ? h("span", {}, " · ", h("a", { href: `#/jobs/${a.lineage.data.job_id}` }, a.lineage.data.job_id)) : ""),
        h("pre", { class: "dialogue" }, pairs(a.lineage.training)),
        h("pre", { class: "dialogue" }, pairs(a.lineage.benchmark)),
        a.loaded ? h("button", { type: "button", class: "secondary", onclick: () => act(a.name, "unload") }, `Unload ${a.name}`)
          : h("button", { type: "button", onclick: () => act(a.name, "load") }, `Load ${a.name}`),
      ]), [3]) : h("p", {}, "No adapter registered yet."));
}

// ----- evaluation reports

function recentEvaluations() {
  return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
}

async function renderEvaluations() {
  const id = h("input", { id: "evaluation-id", required: true, placeholder: "eval-…" });
  const form = h("form", {}, h("div", { class: "row" }, h("div", {}, h("label", { for: "evaluation-id" }, "Evaluation id"), id),
    h("button", { type: "submit" }, "Open report")));
  form.addEventListener("submit", (event) => { event.preventDefault(); location.hash = `#/evaluations/${encodeURIComponent(id.value.trim())}`; });
  const recent = recentEvaluations();
  show(h("h2", {}, "Evaluation reports"), form,
    recent.length ? h("div", {}, h("h3", {}, "Opened recently"), h("ul", {}, recent.map((e) => h("li", {}, h("a", { href: `#/evaluations/${e}` }, e)))))
      : h("p", { class: "muted" }, "Evaluation ids come from `tutorforge evaluate` and the evaluation jobs' results."));
}

const FIGURES = ["pedagogical_score", "question_rate", "answer_reveal_rate", "citation_rate", "groundedness", "socratic"];

async function renderEvaluation(id) {
  const data = await json(`console/api/evaluations/${encodeURIComponent(id)}`);
  localStorage.setItem(RECENT_KEY, JSON.stringify([id, ...recentEvaluations().filter((e) => e !== id)].slice(0, 10)));
  const report = data.report;
  const figure = (t, name) => {
    const interval = t.intervals?.[name];
    return interval ? `${fmt(t[name])} [${fmt(interval.low)}–${fmt(interval.high)}]` : fmt(t[name]);
  };
  const charts = data.charts.map((path) => {
    const img = h("img", { alt: `Chart ${path.replace(/^.*\//, "").replace(/[_-]/g, " ").replace(".png", "")}` });
    api(`console/api/evaluations/${encodeURIComponent(id)}/files/${path.split("/").map(encodeURIComponent).join("/")}`)
      .then((r) => r.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch((error) => status(error.message));
    return h("figure", {}, img, h("figcaption", {}, path));
  });
  show(h("h2", {}, `Evaluation ${report.evaluation_id}`),
    h("p", { class: "muted" }, report.dataset ? `Dataset ${report.dataset}@${report.dataset_version}` : ""),
    h("p", { class: "muted" }, "Each figure with its 95% bootstrap interval."),
    table(["target", "examples", ...FIGURES, "mean words", "errors"],
      report.targets.map((t) => [t.target, t.examples, ...FIGURES.map((name) => figure(t, name)), fmt(t.mean_words, 1), t.errors]),
      [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    h("div", { class: "report" }, charts),
    data.markdown ? h("details", {}, h("summary", {}, "Report (Markdown)"), h("pre", { class: "dialogue" }, data.markdown)) : null);
}

// ----- routing

const ROUTES = [
  [/^#\/chat$/, renderChat],
  [/^#\/documents$/, renderDocuments],
  [/^#\/datasets$/, renderDatasets],
  [/^#\/datasets\/([^/]+)\/([^/]*)$/, (n, v) => renderDataset(decodeURIComponent(n), decodeURIComponent(v))],
  [/^#\/jobs$/, renderJobs],
  [/^#\/jobs\/([^/]+)$/, (id) => renderJob(decodeURIComponent(id))],
  [/^#\/adapters$/, renderAdapters],
  [/^#\/evaluations$/, renderEvaluations],
  [/^#\/evaluations\/([^/]+)$/, (id) => renderEvaluation(decodeURIComponent(id))],
];

async function route(refresh = false) {
  clearTimeout(poll);
  const hash = location.hash || "#/chat";
  const page = hash.split("/").slice(0, 2).join("/");
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const match = ROUTES.map(([pattern, render]) => [hash.match(pattern), render]).find(([m]) => m);
  if (!match) { location.hash = "#/chat"; return; }
  try {
    await match[1](...match[0].slice(1));
    if (!refresh && page !== "#/chat") document.getElementById("view").focus();
    if (page !== "#/chat") status("");
  } catch (error) {
    status(error.message);
    if (!refresh) show(h("h2", {}, page.slice(2).replace(/^./, (c) => c.toUpperCase())), h("p", {}, "This page could not be loaded: see the message above."));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const field = document.getElementById("token");
  field.value = token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (field.value) sessionStorage.setItem(TOKEN_KEY, field.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    status(field.value ? "Token set for this browser tab." : "Token cleared.", true);
    route();
  });
  window.addEventListener("hashchange", () => route());
  route();
});
