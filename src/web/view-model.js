/**
 * The UI's pure logic: graph and timeline layout, queue summaries, log search, apt lines.
 * No DOM here, so vitest checks it directly.
 */

/**
 * Layers a directed graph (edges child → parent) from the top: a node sits one layer below the
 * deepest child pointing at it. Cycles (which the hub refuses anyway) are cut, not looped on.
 * Returns nodes with `layer`, `x`, `y` in a `width`×`height` box, and the edges with endpoints.
 */
export function layoutGraph(nodeNames, edges, { layerGap = 90, nodeGap = 150, margin = 40 } = {}) {
  const names = [...new Set([...nodeNames, ...edges.flatMap((e) => [e.from, e.to])])];
  const layer = new Map(names.map((n) => [n, 0]));
  for (let pass = 0; pass < names.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const want = (layer.get(e.from) ?? 0) + 1;
      if (want > (layer.get(e.to) ?? 0) && want < names.length) {
        layer.set(e.to, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const rows = [];
  for (const n of names) (rows[layer.get(n)] ??= []).push(n);
  const widest = Math.max(1, ...rows.map((r) => r?.length ?? 0));
  const width = margin * 2 + (widest - 1) * nodeGap;
  const pos = new Map();
  rows.forEach((row, i) => {
    const span = (row.length - 1) * nodeGap;
    row.forEach((n, j) =>
      pos.set(n, { name: n, layer: i, x: width / 2 - span / 2 + j * nodeGap, y: margin + i * layerGap }),
    );
  });
  return {
    width,
    height: margin * 2 + (rows.length - 1) * layerGap,
    nodes: names.map((n) => pos.get(n)),
    edges: edges.map((e) => ({ ...e, a: pos.get(e.from), b: pos.get(e.to) })),
  };
}

/**
 * A Gantt chart's rows: one per task (depth-first from the root), bars from start to end (or
 * `now` while running). Times are ms; x is a fraction 0..1 of the span.
 */
export function timelineRows(tasks, now) {
  const started = tasks.filter((t) => t.startedAt);
  const t0 = Math.min(...tasks.map((t) => Date.parse(t.startedAt ?? t.createdAt)));
  // Up to now while anything runs; a finished tree ends where its last task did.
  const running = tasks.some((t) => t.startedAt && !t.completedAt);
  const t1 = Math.max(
    running ? now : -Infinity,
    ...tasks.map((t) => Date.parse(t.completedAt ?? t.createdAt)),
  );
  const span = Math.max(1, t1 - t0);
  return {
    start: t0,
    end: t1,
    rows: tasks.map((t) => {
      const a = t.startedAt ? Date.parse(t.startedAt) : null;
      const b = t.completedAt ? Date.parse(t.completedAt) : now;
      return {
        task: t,
        x0: a === null ? null : (a - t0) / span,
        x1: a === null ? null : (Math.max(a, b) - t0) / span,
      };
    }),
    anyStarted: started.length > 0,
  };
}

/** Orders a task tree depth-first: `children` maps a parent id to its subtasks. */
export function flattenTree(root, children, depth = 0, out = []) {
  out.push({ task: root, depth });
  for (const c of children.get(root.id) ?? []) flattenTree(c, children, depth + 1, out);
  return out;
}

/** Counts of queued tasks by state, by arch and by channel. */
export function summarizeQueue(tasks) {
  const count = (key) => {
    const m = {};
    for (const t of tasks) m[t[key] ?? "noarch"] = (m[t[key] ?? "noarch"] ?? 0) + 1;
    return Object.entries(m).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  };
  return { byState: count("state"), byArch: count("arch"), byChannel: count("channel") };
}

const ERROR_LINE = /\b(error|failed|fatal|cannot|undefined reference|no such file)\b|^E: |^dpkg-\w+: error/i;

/** Index of the first line that looks like an error, or -1. */
export function firstErrorLine(lines) {
  return lines.findIndex((l) => ERROR_LINE.test(l));
}

/** Indexes of the lines containing `query` (case-insensitive). */
export function searchLines(lines, query) {
  if (!query) return [];
  const q = query.toLowerCase();
  const out = [];
  lines.forEach((l, i) => {
    if (l.toLowerCase().includes(q)) out.push(i);
  });
  return out;
}

/** The line a failed task failed on: the first error-looking line, else the last non-empty one. */
export function failingLine(lines) {
  const first = firstErrorLine(lines);
  if (first >= 0) return first;
  for (let i = lines.length - 1; i >= 0; i--) if (lines[i].trim() !== "") return i;
  return -1;
}

const KEYRING_PATH = "/usr/share/keyrings/kiln-archive-keyring.gpg";

function aptBase(hub, prefix) {
  const base = `${hub.replace(/\/+$/, "")}/apt`;
  return prefix === "." || prefix === "" ? base : `${base}/${prefix}`;
}

/** The same text as `kiln publish` prints (src/cli/publish-wait.ts): test/web checks they match. */
export function sourcesLine(hub, pub) {
  const option = pub.signed ? `signed-by=${KEYRING_PATH}` : "trusted=yes";
  return `deb [${option}] ${aptBase(hub, pub.prefix)} ${pub.distribution} ${pub.components.join(" ")}`;
}

export function keyringCommand(hub) {
  return `curl -fsSL ${aptBase(hub, ".")}/kiln-archive-keyring.asc | sudo gpg --dearmor -o ${KEYRING_PATH}`;
}

/** Which actions the signed-in principal may take (the API decides; this only hides buttons). */
export function permissions(me) {
  const admin = me?.role === "admin";
  const user = admin || (me?.role === "user" && !!me.user);
  return {
    admin,
    user,
    controlTask: (task) => admin || (user && task.owner === me.user),
  };
}
