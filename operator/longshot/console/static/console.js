// The Longshot console's page (docs/console.md). No build step, no library.
// Every field comes from resources that agents, repositories and build authors wrote: it is hostile. It is only
// ever set as text (textContent, createTextNode); this file never uses innerHTML, outerHTML, insertAdjacentHTML
// or document.write (the Content-Security-Policy also refuses inline scripts).
"use strict";

const TOKEN_KEY = "longshot.console.token";
const objects = new Map(); // "kind/namespace/name" -> summary
let user = "";
let drawPending = false;
let retryMs = 1000;
let stream = null;

function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value == null ? "" : String(value);
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (key === "className" || key === "type" || key === "title") node[key] = String(value);
    else throw new Error("el: unsupported property " + key);
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function notice(message) {
  $("notice").textContent = message || "";
  if (message) setTimeout(() => { if ($("notice").textContent === message) $("notice").textContent = ""; }, 8000);
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  return Object.assign({ "Authorization": "Bearer " + token() }, extra || {});
}

// --- the live stream: Server-Sent Events read through fetch (EventSource cannot send Authorization) ---------

async function connect() {
  if (!token()) { showLogin(); return; }
  $("login").hidden = true;
  $("main").hidden = false;
  $("state").textContent = "connecting";
  const controller = new AbortController();
  stream = controller;
  let response;
  try {
    response = await fetch("/api/events", { headers: headers(), signal: controller.signal, cache: "no-store" });
  } catch (e) {
    return retry("the console cannot be reached");
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("the API server does not accept this token");
    return;
  }
  if (!response.ok || !response.body) {
    return retry("the console answered " + response.status);
  }
  $("state").textContent = "live";
  retryMs = 1000;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (handle(block) === "reload") { controller.abort(); return retry("reconnecting", 200); }
      }
    }
  } catch (e) {
    if (stream !== controller) return; // logged out
  }
  retry("the stream ended");
}

function retry(why, delay) {
  if (!token()) return;
  $("state").textContent = why + "; retrying";
  setTimeout(connect, delay || retryMs);
  retryMs = Math.min(retryMs * 2, 30000);
}

// One Server-Sent Events block: [event, its JSON data] (null: a comment, a keepalive).
function parseBlock(block) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  return data ? [event, JSON.parse(data)] : null;
}

function handle(block) {
  const parsed = parseBlock(block);
  if (!parsed) return null;
  const [event, payload] = parsed;
  if (event === "snapshot") {
    objects.clear();
    for (const obj of payload.objects) objects.set(key(obj.kind, obj.namespace, obj.name), obj);
    user = payload.user || "";
  } else if (event === "change") {
    const k = key(payload.kind, payload.namespace, payload.name);
    if (payload.object) objects.set(k, payload.object); else objects.delete(k);
  } else if (event === "namespace" || event === "forget") {
    // a namespace the person may now list arrives whole; one they may no longer list is taken back
    for (const [k, obj] of objects) if (obj.namespace === payload.namespace) objects.delete(k);
    for (const obj of payload.objects || []) objects.set(key(obj.kind, obj.namespace, obj.name), obj);
  } else if (event === "reload") {
    return "reload";
  }
  scheduleDraw();
  return null;
}

function key(kind, namespace, name) { return kind + "/" + namespace + "/" + name; }

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

// --- actions: each one is sent with the person's token, and the API server decides ----------------------

async function act(obj, action, body) {
  const path = ["/api/act", obj.namespace, obj.kind, obj.name, action].map(encodeURIComponent).join("/")
    .replace(/%2F/g, "/");
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                   body: JSON.stringify(body || {}) });
  } catch (e) {
    notice("the console cannot be reached");
    return;
  }
  const answer = await response.json().catch(() => ({}));
  notice(response.ok ? answer.done : (action + " refused (" + response.status + "): " + (answer.error || "")));
}

function ask(obj, action, question, extra) {
  const text = prompt(question);
  if (text) act(obj, action, Object.assign({ text }, extra || {}));
}

const TRANSCRIPT_CHARS = 200000; // what the transcript box holds at most (a followed log drops its oldest text)
let following = null; // the followed transcript's AbortController
let shownChars = 0;

function stopFollowing() {
  if (following) following.abort();
  following = null;
}

function openTranscript(title) {
  stopFollowing();
  $("transcript-box").hidden = false;
  $("transcript-title").textContent = title;
  $("transcript").textContent = "";
  shownChars = 0;
}

function appendTranscript(text) {
  const box = $("transcript");
  box.append(document.createTextNode(text));
  shownChars += text.length;
  while (shownChars > TRANSCRIPT_CHARS && box.firstChild) {
    shownChars -= box.firstChild.textContent.length;
    box.firstChild.remove();
  }
}

async function showTranscript(task, attempt, source) {
  const url = "/api/transcript/" + encodeURIComponent(task.namespace) + "/" + encodeURIComponent(task.name) +
    "?attempt=" + encodeURIComponent(attempt.number) + "&source=" + source;
  openTranscript(task.name + " attempt " + attempt.number + " (" + source + ")");
  const response = await fetch(url, { headers: headers(), cache: "no-store" });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { $("transcript").textContent = data.error || String(response.status); return; }
  $("transcript").textContent = source === "pod" ? data.text :
    (data.events || []).map((e) => JSON.stringify(e)).join("\n") + (data.result ? "\n" + JSON.stringify(data.result) : "");
}

// A running attempt's log as it grows (Server-Sent Events read through fetch: the token goes in the Authorization
// header only), then how it ended. Text only; the box keeps the last TRANSCRIPT_CHARS characters.
async function followTranscript(task, attempt) {
  const title = task.name + " attempt " + attempt.number;
  openTranscript(title + " (following)");
  const controller = new AbortController();
  following = controller;
  const url = "/api/follow/" + encodeURIComponent(task.namespace) + "/" + encodeURIComponent(task.name) +
    "?attempt=" + encodeURIComponent(attempt.number);
  let response;
  try {
    response = await fetch(url, { headers: headers(), signal: controller.signal, cache: "no-store" });
  } catch (e) {
    if (following === controller) appendTranscript("the console cannot be reached\n");
    return;
  }
  if (!response.ok || !response.body) {
    const data = await response.json().catch(() => ({}));
    if (following === controller) appendTranscript(data.error || String(response.status));
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || following !== controller) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const parsed = parseBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (!parsed) continue;
        const [event, payload] = parsed;
        if (event === "line") appendTranscript(payload.text + "\n");
        else if (event === "gap") appendTranscript("[" + payload.dropped + " lines not shown: this page fell behind]\n");
        else if (event === "end") {
          if (payload.result) appendTranscript(JSON.stringify(Object.assign({ type: "result" }, payload.result)) + "\n");
          appendTranscript((payload.said || "") + "\n");
          $("transcript-title").textContent = title + " (ended)";
        } else if (event === "reload") {
          controller.abort();
          followTranscript(task, attempt); // the log again from its start, on a new stream
          return;
        }
      }
    }
  } catch (e) {
    return; // aborted: closed, another transcript, or logged out
  }
}

// --- drawing --------------------------------------------------------------------------------------------

function button(label, onclick) { return el("button", { type: "button", text: label, onclick }); }

function ofKind(kind) { return [...objects.values()].filter((o) => o.kind === kind); }

function byName(a, b) { return (a.namespace + "/" + a.name).localeCompare(b.namespace + "/" + b.name); }

function draw() {
  $("who").textContent = user;
  const builds = ofKind("BuildRequest").sort(byName);
  const tasks = ofKind("AgentTask");
  const jobs = ofKind("MergeJob");
  drawWaiting(builds, tasks, jobs);
  drawQueue(jobs);
  const list = builds.map((b) => drawBuild(b, tasks.filter((t) => t.namespace === b.namespace && t.build === b.name),
                                             jobs.filter((j) => j.namespace === b.namespace && j.build === b.name)));
  $("builds").replaceChildren(...(list.length ? list : [el("p", { className: "muted", text: "no builds you may see" })]));
}

function drawWaiting(builds, tasks, jobs) {
  const items = [];
  for (const t of tasks.filter((t) => t.phase === "AwaitingInput").sort(byName)) {
    items.push(el("li", { "data-waiting": "question" }, t.namespace + "/" + t.name + " asks: ",
                  el("q", { text: t.question }), " ", button("answer", () => ask(t, "answer", "Your answer"))));
  }
  for (const j of jobs.filter((j) => j.phase === "AwaitingApproval" && !j.approved).sort(byName)) {
    items.push(el("li", { "data-waiting": "approval" }, j.namespace + "/" + j.name + " (" + (j.branch || "") +
                  ") waits for approval ", button("approve", () => act(j, "approve"))));
  }
  for (const b of builds.filter((b) => b.stalled && b.stalled.status === "True")) {
    items.push(el("li", { "data-waiting": "stalled" }, b.namespace + "/" + b.name + " is stalled: " +
                  (b.stalled.reason || "") + ": " + (b.stalled.message || "")));
  }
  $("waiting").replaceChildren(...(items.length ? items : [el("li", { className: "muted", text: "nothing" })]));
}

function drawQueue(jobs) {
  const lines = new Map();
  for (const j of jobs) {
    const k = j.namespace + " → " + (j.target || "?");
    if (!lines.has(k)) lines.set(k, []);
    lines.get(k).push(j);
  }
  const out = [];
  for (const [line, members] of [...lines.entries()].sort()) {
    const waiting = members.filter((j) => !["Merged", "Superseded", "Failed", "Cancelled"].includes(j.phase))
      .sort((a, b) => (a.position || 1e9) - (b.position || 1e9) || byName(a, b));
    const landed = members.filter((j) => j.phase === "Merged").sort(byName).slice(-10);
    const rows = waiting.map((j) => el("tr", {},
      el("td", { text: j.position == null ? "" : j.position }), el("td", { text: j.name }),
      el("td", { className: "phase", text: j.phase || "Queued" }),
      el("td", { text: j.batch ? "batch " + j.batch.id.slice(0, 8) + " #" + j.batch.position : "" }),
      el("td", { text: j.checks || "" }), el("td", { text: j.lastResult || "" })));
    out.push(el("h3", { text: line }),
      el("table", {}, el("tr", {}, ...["#", "MergeJob", "phase", "batch under test", "checks", "last result"]
        .map((h) => el("th", { text: h }))), ...rows),
      el("p", { className: "muted", text: "landed: " + (landed.map((j) => j.name + " " +
        (j.mergedCommit || "").slice(0, 12)).join(", ") || "none yet") }));
  }
  $("queue").replaceChildren(...(out.length ? out : [el("p", { className: "muted", text: "empty" })]));
}

function budgetText(b) {
  const u = b.budget || {};
  return "tokens " + u.tokens + (u.maxTokens != null ? " / " + u.maxTokens : "") +
    ", cost " + u.cost + (u.maxCost != null ? " / " + u.maxCost : "");
}

function drawBuild(b, tasks, jobs) {
  const counts = b.tasks || {};
  const head = el("div", {},
    el("strong", { text: b.namespace + "/" + b.name }), " ",
    el("span", { className: "phase", text: (b.phase || "Pending") + (b.suspended ? " (suspended)" : "") }),
    " tasks " + counts.succeeded + "/" + counts.total + " · " + budgetText(b) + " ",
    b.suspended ? button("resume", () => act(b, "resume")) : button("suspend", () => act(b, "suspend")),
    button("cancel", () => { if (confirm("Cancel build " + b.name + " and its unfinished tasks?")) act(b, "cancel"); }));
  const jobOf = new Map(jobs.map((j) => [j.name, j]));
  const rows = tasks.sort(byName).map((t) => {
    const last = t.attempts.length ? t.attempts[t.attempts.length - 1] : null;
    const job = jobOf.get(t.mergeJob || t.name);
    const attempts = el("td", {}, String(t.attempts.length) + (last && last.exitReason ? " · " + last.exitReason : ""),
      ...(last ? [" ", button("transcript", () => last.end ? showTranscript(t, last, "ledger") : followTranscript(t, last))] : []));
    return el("tr", { "data-task": t.name },
      el("td", { text: t.name }), el("td", { text: t.role }),
      el("td", { className: "phase", text: (t.phase || "Pending") + (t.suspended ? " (suspended)" : "") }),
      el("td", { text: (t.dependsOn || []).join(", ") }), attempts,
      el("td", { text: t.branch || "" }), el("td", { className: "phase", text: job ? (job.phase || "Queued") : "" }),
      el("td", {},
        t.phase === "AwaitingInput" ? button("answer", () => ask(t, "answer", t.question || "Your answer")) : null,
        t.suspended ? button("resume", () => act(t, "resume")) : button("suspend", () => act(t, "suspend")),
        button("relaunch", () => act(t, "relaunch")),
        button("cancel", () => { if (confirm("Cancel task " + t.name + "?")) act(t, "cancel"); }),
        t.phase === "Running" ? button("message", () => ask(t, "message", "A message for the running agent")) : null,
        t.phase === "Running" ? button("interrupt", () => ask(t, "message",
          "Stop the agent's current command, and tell it instead:", { interrupt: true })) : null));
  });
  return el("div", { className: "build", "data-build": b.name }, head,
    el("table", {}, el("tr", {}, ...["task", "role", "phase", "depends on", "attempts", "branch", "merge", ""]
      .map((h) => el("th", { text: h }))), ...rows));
}

// --- the token --------------------------------------------------------------------------------------------

function showLogin(why) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("state").textContent = why || "not connected";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    connect();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    stopFollowing();
    objects.clear();
    draw();
    showLogin("token forgotten");
  });
  $("transcript-close").addEventListener("click", () => { stopFollowing(); $("transcript-box").hidden = true; });
  connect();
});
