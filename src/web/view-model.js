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

/** A round number at or above `v` (1, 2 or 5 times a power of ten), for a chart's top line. */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v * (1 - 1e-9)) ?? 10 * p;
}

/**
 * A line chart's geometry in a `width`×`height` plot: a point per known value (x evenly spread,
 * y from `max` at the top to 0 at the bottom), and one path per run of known values, since a
 * bucket without data is a gap, not a zero.
 */
export function chartLine(values, { width, height, max }) {
  const top = max ?? niceMax(Math.max(0, ...values.filter((v) => v !== null && v !== undefined)));
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const points = [];
  const paths = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (run.length) paths.push(run);
      run = [];
      return;
    }
    const p = { i, value: v, x: values.length > 1 ? i * step : width / 2, y: height - (v / top) * height };
    points.push(p);
    run.push(p);
  });
  if (run.length) paths.push(run);
  const round = (n) => Math.round(n * 10) / 10;
  return {
    max: top,
    points,
    paths: paths.map((r) => r.map((p, j) => `${j ? "L" : "M"} ${round(p.x)} ${round(p.y)}`).join(" ")),
  };
}

/** Seconds as a short duration: "0.5 s", "42 s", "3.5 min", "2.0 h"; "—" when unknown. */
export function formatSeconds(sec) {
  if (sec === null || sec === undefined) return "—";
  if (sec < 10) return `${Number(sec.toFixed(1))} s`;
  if (sec < 60) return `${Math.round(sec)} s`;
  if (sec < 3600) return `${(sec / 60).toFixed(1)} min`;
  return `${(sec / 3600).toFixed(1)} h`;
}

const TAG_CHANGES = {
  "tag.created": () => "created",
  "tag.deleted": () => "deleted",
  "tag.edited": (d) =>
    `edited: ${Object.entries(d.changes ?? {})
      .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
      .join(", ")}`,
  "tag.parent_added": (d) =>
    `parent ${d.parent} added` + (d.priority !== undefined ? ` (priority ${d.priority})` : ""),
  "tag.parent_removed": (d) => `parent ${d.parent} removed`,
  "tag.build_added": (d) => `build ${d.build} tagged`,
  "tag.build_removed": (d) => `build ${d.build} untagged`,
  "package.add": (d) => `${(d.packages ?? []).join(", ")} added` + (d.owner ? ` (owner ${d.owner})` : ""),
  "package.block": (d) => `${(d.packages ?? []).join(", ")} blocked`,
  "package.unblock": (d) => `${(d.packages ?? []).join(", ")} unblocked`,
  "package.remove": (d) => `${(d.packages ?? []).join(", ")} removed`,
};

/**
 * A tag's history from tag.* and package.* events: the ones about `tag`, newest first, each with
 * a sentence saying what changed. Types it does not know still show, by their name.
 */
export function tagHistory(events, tag) {
  return events
    .filter((e) => e.data?.tag === tag)
    .sort((a, b) => b.id - a.id)
    .map((e) => ({ ...e, change: (TAG_CHANGES[e.type] ?? (() => e.type))(e.data) }));
}
