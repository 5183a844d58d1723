/* global document, location */
import { api, followEvents } from "./api.js";
import { actionButton, append, clear, h, link, s, stateBadge, table, timeEl } from "./dom.js";
import { failingLine, firstErrorLine, flattenTree, searchLines, timelineRows } from "./view-model.js";

const STATES = ["", "free", "assigned", "open", "closed", "failed", "canceled"];
const PAGE = 50;

/** Newest first, keyset-paginated with `before` (stays fast however many tasks there are). */
export async function renderTaskList(ctx) {
  const { main, signal, query } = ctx;
  const state = query.get("state") ?? "";
  const before = query.get("before");
  const method = query.get("method") ?? "";
  const qs = new URLSearchParams({ limit: String(PAGE) });
  if (state) qs.set("state", state);
  if (method) qs.set("method", method);
  if (before) qs.set("before", before);
  const page = await api(`/tasks?${qs}`, { signal });

  const stateSel = h(
    "select#state",
    { name: "state" },
    STATES.map((x) => h("option", { value: x, selected: x === state }, x || "any state")),
  );
  const methodIn = h("input#method", { name: "method", value: method, placeholder: "method", size: 12 });
  const form = h(
    "form.inline",
    h("label", { for: "state" }, "State"),
    stateSel,
    h("label", { for: "method" }, "Method"),
    methodIn,
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (stateSel.value) q.set("state", stateSel.value);
    if (methodIn.value.trim()) q.set("method", methodIn.value.trim());
    location.hash = `#/tasks?${q}`;
  });
  const nextQs = new URLSearchParams(qs);
  nextQs.delete("limit");
  if (page.next) nextQs.set("before", String(page.next));
  main.append(
    h("h1", "Tasks"),
    form,
    table(
      [
        { label: "id", cell: (t) => link(`#/tasks/${t.id}`, `#${t.id}`) },
        { label: "method", cell: (t) => t.method },
        { label: "state", cell: (t) => stateBadge(t.waiting ? "waiting" : t.state) },
        { label: "arch", cell: (t) => t.arch ?? "noarch" },
        { label: "owner", cell: (t) => t.owner },
        { label: "parent", cell: (t) => (t.parentId ? link(`#/tasks/${t.parentId}`, `#${t.parentId}`) : "") },
        { label: "created", cell: (t) => timeEl(t.createdAt) },
      ],
      page.tasks,
      { empty: "no tasks" },
    ),
    h(
      "nav.pager",
      { "aria-label": "pages" },
      before
        ? h(
            "a.button",
            {
              href:
                "#/tasks" +
                (state || method
                  ? `?${new URLSearchParams({ ...(state ? { state } : {}), ...(method ? { method } : {}) })}`
                  : ""),
            },
            "Newest",
          )
        : null,
      page.next ? h("a.button", { href: `#/tasks?${nextQs}`, "data-testid": "older" }, "Older →") : null,
    ),
  );
}

/** Fetches a task's subtasks, recursively, up to a bound (a build has a few dozen at most). */
async function loadTree(root, signal) {
  const children = new Map();
  const queue = [root];
  let fetched = 0;
  while (queue.length > 0 && fetched < 200) {
    const t = queue.shift();
    const page = await api(`/tasks?parent=${t.id}&limit=1000`, { signal });
    fetched++;
    const kids = page.tasks.sort((a, b) => a.id - b.id);
    children.set(t.id, kids);
    queue.push(...kids);
  }
  return children;
}

export async function renderTask(ctx) {
  const { main, signal, can } = ctx;
  const id = Number(ctx.params[0]);
  const header = h("div");
  const fields = h("section.card#fields", { "aria-labelledby": "fields-h" });
  const tree = h("section.card#subtasks", { "aria-labelledby": "tree-h" });
  const timeline = h("section.card#timeline", { "aria-labelledby": "timeline-h" });
  const logCard = h("section.card#log", { "aria-labelledby": "log-h" });
  main.append(header, h("div.grid", fields, tree), timeline, logCard);

  const hosts = new Map((await api("/hosts", { signal })).map((x) => [x.id, x.name]));
  const log = createLogView(id);
  logCard.append(log.el);

  let task;
  const refresh = async () => {
    task = await api(`/tasks/${id}`, { signal });
    const children = await loadTree(task, signal);
    if (signal.aborted) return;
    drawHeader(header, task, can, refresh);
    drawFields(fields, task);
    drawTree(tree, task, children);
    drawTimeline(timeline, flattenTree(task, children), hosts);
    log.setTask(task);
  };
  await refresh();

  // The log stream ends when the task does; state and subtasks are refreshed alongside it.
  const poll = setInterval(() => {
    if (!["closed", "failed", "canceled"].includes(task.state) || !log.ended) void refresh().catch(() => {});
  }, 2000);
  signal.addEventListener("abort", () => clearInterval(poll));
  await log.follow(signal, () => void refresh().catch(() => {}));
}

function drawHeader(el, task, can, refresh) {
  const status = h("p.status", { role: "status" });
  const actions = h("div.actions");
  const final = ["closed", "failed", "canceled"].includes(task.state);
  if (can.controlTask(task)) {
    if (!final) {
      actions.append(
        actionButton(
          "Cancel",
          async () => {
            await api(`/tasks/${task.id}/cancel`, { method: "POST" });
            await refresh();
          },
          { danger: true, status, testid: "cancel" },
        ),
      );
    }
    if (task.state === "failed" || task.state === "canceled") {
      actions.append(
        actionButton(
          "Retry",
          async () => {
            await api(`/tasks/${task.id}/retry`, { method: "POST" });
            await refresh();
          },
          { status, testid: "retry" },
        ),
      );
    }
  }
  append(clear(el), [
    h(
      "h1",
      `Task #${task.id} `,
      h("span", { "data-testid": "task-state" }, stateBadge(task.waiting ? "waiting" : task.state)),
      " ",
      task.method,
    ),
    task.parentId ? h("p", "Part of ", link(`#/tasks/${task.parentId}`, `task #${task.parentId}`)) : null,
    task.error
      ? h(
          "div.error-box",
          { role: "alert", "data-testid": "task-error" },
          h("strong", task.error.code),
          ": ",
          task.error.message,
          task.error.exitCode !== undefined && task.error.exitCode !== null
            ? ` (exit code ${task.error.exitCode})`
            : "",
        )
      : null,
    task.why && !final ? h("p.notice", task.why) : null,
    actions,
    status,
  ]);
}

function drawFields(el, t) {
  const rows = [
    ["owner", t.owner],
    ["arch", t.arch ?? "noarch"],
    ["channel", t.channel],
    ["host", t.host ?? "—"],
    ["priority", t.priority],
    ["weight", t.weight],
    ["attempts", `${t.attempts} (infra failures ${t.infraFailures}, lease epoch ${t.leaseEpoch})`],
    ["label", t.label ?? "—"],
    ["created", timeEl(t.createdAt)],
    ["started", timeEl(t.startedAt)],
    ["completed", timeEl(t.completedAt)],
    ["timeout", t.timeout ? `${t.timeout} s` : "default"],
    [
      "locks",
      t.locks?.length
        ? t.locks.map((l) => `${l.resource}${l.exclusive ? "" : " (shared)"}`).join(", ")
        : "none",
    ],
    ["args", h("code.mono", JSON.stringify(t.args))],
    ["result", t.result === null ? "—" : h("code.mono", JSON.stringify(t.result))],
  ];
  clear(el).append(
    h("h2#fields-h", "Fields"),
    h(
      "dl.fields",
      rows.map(([k, v]) => [h("dt", k), h("dd", v)]),
    ),
  );
}

function drawTree(el, root, children) {
  const item = (t) =>
    h(
      "li",
      link(`#/tasks/${t.id}`, `#${t.id}`),
      " ",
      t.method,
      t.arch ? ` (${t.arch})` : "",
      " ",
      stateBadge(t.waiting ? "waiting" : t.state),
      (children.get(t.id) ?? []).length ? h("ul.tree", children.get(t.id).map(item)) : null,
    );
  const kids = children.get(root.id) ?? [];
  clear(el).append(
    h("h2#tree-h", "Subtasks"),
    kids.length ? h("ul.tree", kids.map(item)) : h("p.empty", "no subtasks"),
  );
}

/** A Gantt chart: one row per task, its bar from start to end on the host that ran it. */
function drawTimeline(el, flat, hosts) {
  const { rows, start, end, anyStarted } = timelineRows(
    flat.map((f) => f.task),
    Date.now(),
  );
  clear(el).append(h("h2#timeline-h", "Timeline"));
  if (!anyStarted) {
    el.append(h("p.empty", "not started yet"));
    return;
  }
  const labelW = 230;
  const chartW = 640;
  const rowH = 24;
  const height = rows.length * rowH + 28;
  const svg = s("svg", {
    viewBox: `0 0 ${labelW + chartW + 30} ${height}`,
    width: "100%",
    role: "img",
    "aria-label": "timeline of the task and its subtasks",
    "data-testid": "gantt",
  });
  const secs = (end - start) / 1000;
  const tick = (v) => (secs < 10 ? v.toFixed(1) : String(Math.round(v)));
  for (let i = 0; i <= 4; i++) {
    const x = labelW + (chartW * i) / 4;
    svg.append(
      s("line", { class: "axis", x1: x, x2: x, y1: 0, y2: height - 18 }),
      s("text", { x, y: height - 4, "text-anchor": "middle" }, `${tick((secs * i) / 4)} s`),
    );
  }
  rows.forEach((r, i) => {
    const depth = flat[i].depth;
    const t = r.task;
    const y = i * rowH;
    const host = t.hostId ? (hosts.get(t.hostId) ?? `host ${t.hostId}`) : "";
    svg.append(
      s("text", { x: 4 + depth * 12, y: y + 16 }, `#${t.id} ${t.method}${t.arch ? " " + t.arch : ""}`),
    );
    if (r.x0 !== null) {
      const x = labelW + r.x0 * chartW;
      const w = Math.max(2, (r.x1 - r.x0) * chartW);
      svg.append(
        s(
          "rect",
          { class: `gantt-bar ${t.state}`, x, y: y + 4, width: w, height: rowH - 8, rx: 2 },
          s("title", `#${t.id} ${t.method} ${t.state}${host ? " on " + host : ""}`),
        ),
        // The host's name after the bar, or inside it when the bar reaches the right edge.
        x + w + 150 < labelW + chartW
          ? s("text", { x: x + w + 4, y: y + 16 }, host)
          : s("text", { x: x + w - 4, y: y + 16, "text-anchor": "end", fill: "#fff" }, host),
      );
    }
  });
  el.append(h("div.svg-wrap", svg));
}

/** The log viewer: follows the SSE stream, searchable, jump to first error, downloadable. */
function createLogView(taskId) {
  let text = "";
  let lines = [];
  let matches = [];
  let current = -1;
  let task = null;
  const pre = h("pre.log", { tabindex: "0", "aria-label": "task log", "data-testid": "log" });
  const followBox = h("input#follow-log", { type: "checkbox", checked: true });
  const search = h("input#log-search", {
    type: "search",
    placeholder: "search the log",
    "aria-label": "search the log",
  });
  const count = h("span.follow", { "aria-live": "polite" });
  const failing = h("div");
  const view = {
    ended: false,
    el: h(
      "div",
      h("h2#log-h", "Log"),
      failing,
      h(
        "div.log-tools",
        search,
        h("button", { type: "button", onclick: () => step(1) }, "Next"),
        h("button", { type: "button", onclick: () => step(-1) }, "Previous"),
        count,
        h(
          "button",
          { type: "button", "data-testid": "first-error", onclick: () => jumpToError() },
          "First error",
        ),
        h("button", { type: "button", onclick: () => download() }, "Download"),
        h("label.follow", followBox, " follow"),
      ),
      pre,
    ),
    setTask(t) {
      const wasFailed = task?.state === "failed";
      task = t;
      if (!wasFailed && t.state === "failed") paint();
      drawFailing();
    },
    async follow(signal, onEnd) {
      await followEvents(`/tasks/${taskId}/logs?follow=1`, {
        signal,
        onEvent: (ev) => {
          if (ev.event === "log") {
            const chunk = JSON.parse(ev.data);
            add(chunk.data, chunk.epoch);
          } else if (ev.event === "end") {
            view.ended = true;
            onEnd();
            return false;
          }
          return true;
        },
      });
    },
  };
  let epoch = null;

  search.addEventListener("input", () => {
    matches = searchLines(lines, search.value);
    current = matches.length ? 0 : -1;
    paint();
    reveal();
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      step(e.shiftKey ? -1 : 1);
    }
  });

  function add(data, ep) {
    if (epoch !== null && ep !== epoch) text += `\n--- attempt ${ep} ---\n`;
    epoch = ep;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const before = lines.length;
    text += data;
    lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    if (search.value) {
      matches = searchLines(lines, search.value);
      paint();
    } else {
      // Only the last (maybe partial) line and the new ones: a long log stays cheap to follow.
      paint(Math.max(0, before - 1));
    }
    drawFailing();
    if (followBox.checked && atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function lineEl(i, matchSet, errAt) {
    const cls = [
      "line",
      matchSet.has(i) ? "match" : "",
      matches[current] === i ? "current" : "",
      i === errAt ? "err" : "",
    ]
      .filter(Boolean)
      .join(" ");
    return h("span", { class: cls, "data-line": i + 1 }, lines[i] + "\n");
  }

  /** Redraws lines from `from` on (all by default). */
  function paint(from = 0) {
    const errAt = task?.state === "failed" ? failingLine(lines) : -1;
    const matchSet = new Set(matches);
    if (from === 0) clear(pre);
    else while (pre.childNodes.length > from) pre.lastChild.remove();
    for (let i = from; i < lines.length; i++) pre.append(lineEl(i, matchSet, errAt));
    count.textContent = search.value ? `${matches.length ? current + 1 : 0} of ${matches.length}` : "";
  }

  function drawFailing() {
    clear(failing);
    if (task?.state !== "failed" || lines.length === 0) return;
    const i = failingLine(lines);
    if (i < 0) return;
    failing.append(
      h(
        "div.error-box",
        { "data-testid": "failing-line" },
        h("strong", `Failed at line ${i + 1}:`),
        h("pre.mono", lines[i]),
      ),
    );
  }

  function step(dir) {
    if (matches.length === 0) return;
    current = (current + dir + matches.length) % matches.length;
    paint();
    reveal();
  }

  function reveal() {
    const i = matches[current];
    if (i === undefined) return;
    followBox.checked = false;
    pre.querySelector(`[data-line="${i + 1}"]`)?.scrollIntoView({ block: "center" });
  }

  function jumpToError() {
    const i = firstErrorLine(lines);
    const at = i >= 0 ? i : failingLine(lines);
    if (at < 0) {
      count.textContent = "no error in the log";
      return;
    }
    followBox.checked = false;
    search.value = "";
    matches = [at];
    current = 0;
    paint();
    reveal();
  }

  function download() {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    const a = h("a", { href: url, download: `task-${taskId}.log` });
    document.body.append(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(url);
  }

  return view;
}
