import { describe, expect, it } from "vitest";
import { keyringCommand as cliKeyring, sourcesLine as cliSources } from "../../src/cli/publish-wait.js";
import {
  chartLine,
  failingLine,
  firstErrorLine,
  flattenTree,
  formatSeconds,
  keyringCommand,
  layoutGraph,
  niceMax,
  permissions,
  searchLines,
  sourcesLine,
  summarizeQueue,
  tagHistory,
  timelineRows,
} from "../../src/web/view-model.js";

describe("the web UI's view logic", () => {
  it("layers an inheritance graph children above parents, a diamond's base below both sides", () => {
    const g = layoutGraph(
      ["release"],
      [
        { from: "release", to: "updates" },
        { from: "release", to: "extras" },
        { from: "updates", to: "base" },
        { from: "extras", to: "base" },
        { from: "base", to: "core" },
      ],
    );
    const layer = Object.fromEntries(g.nodes.map((n) => [n.name, n.layer]));
    expect(layer).toEqual({ release: 0, updates: 1, extras: 1, base: 2, core: 3 });
    const xs = g.nodes.filter((n) => n.layer === 1).map((n) => n.x);
    expect(new Set(xs).size).toBe(2);
    expect(g.edges.every((e) => e.a && e.b && e.a.y < e.b.y)).toBe(true);
  });

  it("cuts a cycle instead of looping", () => {
    const g = layoutGraph(
      ["a"],
      [
        { from: "a", to: "b" },
        { from: "b", to: "a" },
      ],
    );
    expect(g.nodes).toHaveLength(2);
  });

  it("lays out a timeline from the first start to the last end or now", () => {
    const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const root = { id: 1, createdAt: at(0), startedAt: at(0), completedAt: at(10) };
    const kid = { id: 2, createdAt: at(1), startedAt: at(5), completedAt: null };
    const queued = { id: 3, createdAt: at(2), startedAt: null, completedAt: null };
    const { rows } = timelineRows([root, kid, queued], Date.parse(at(20)));
    expect(rows.map((r) => [r.x0, r.x1])).toEqual([
      [0, 0.5],
      [0.25, 1],
      [null, null],
    ]);
    // All finished: the chart ends with the last task, not now.
    const done = timelineRows([root, { ...kid, completedAt: at(8) }], Date.parse(at(60)));
    expect(done.end).toBe(Date.parse(at(10)));
  });

  it("flattens a task tree depth first", () => {
    const t = (id: number) => ({ id });
    const children = new Map([
      [1, [t(2), t(4)]],
      [2, [t(3)]],
    ]);
    expect(flattenTree(t(1), children).map((f) => [f.task.id, f.depth])).toEqual([
      [1, 0],
      [2, 1],
      [3, 2],
      [4, 1],
    ]);
  });

  it("summarizes the queue by state, arch and channel", () => {
    const q = summarizeQueue([
      { state: "free", arch: "amd64", channel: "default" },
      { state: "free", arch: null, channel: "default" },
      { state: "open", arch: "amd64", channel: "bigmem" },
    ]);
    expect(q.byState).toEqual([
      ["free", 2],
      ["open", 1],
    ]);
    expect(q.byArch).toEqual([
      ["amd64", 2],
      ["noarch", 1],
    ]);
    expect(q.byChannel).toEqual([
      ["default", 2],
      ["bigmem", 1],
    ]);
  });

  it("finds errors and search hits in a log", () => {
    const lines = ["building", "gcc -c x.c", "x.c:1: error: nope", "make: *** failed", "done"];
    expect(firstErrorLine(lines)).toBe(2);
    expect(failingLine(lines)).toBe(2);
    expect(failingLine(["sleep: 1/1", ""])).toBe(0);
    expect(failingLine([])).toBe(-1);
    expect(searchLines(lines, "X.C")).toEqual([1, 2]);
    expect(searchLines(lines, "")).toEqual([]);
  });

  it("prints the same sources.list line and key command as the CLI", () => {
    const hub = "https://kiln.example.org/";
    for (const pub of [
      { prefix: ".", distribution: "stable", components: ["main"], signed: true },
      { prefix: "ppa", distribution: "bookworm", components: ["main", "contrib"], signed: false },
    ]) {
      expect(sourcesLine(hub, pub)).toBe(cliSources(hub, pub));
    }
    expect(keyringCommand(hub)).toBe(cliKeyring(hub));
  });

  it("offers actions by role: admins all, users their own tasks, anonymous readers none", () => {
    const task = { owner: "bob" };
    expect(permissions({ role: "admin", user: "root" }).controlTask(task)).toBe(true);
    expect(permissions({ role: "user", user: "bob" }).controlTask(task)).toBe(true);
    expect(permissions({ role: "user", user: "eve" }).controlTask(task)).toBe(false);
    const anon = permissions({ role: "user", user: null });
    expect([anon.user, anon.admin, anon.controlTask(task)]).toEqual([false, false, false]);
  });

  it("rounds a chart's top up to 1, 2 or 5 times a power of ten", () => {
    expect([0, 0.3, 1, 1.2, 3, 7, 10, 420, 5000].map(niceMax)).toEqual([1, 0.5, 1, 2, 5, 10, 10, 500, 5000]);
  });

  it("plots a line with gaps where a bucket has no value, zero at the bottom", () => {
    const line = chartLine([0.5, null, 1, 0, undefined], { width: 400, height: 100, max: 1 });
    expect(line.max).toBe(1);
    expect(line.points.map((p) => [p.i, p.x, p.y])).toEqual([
      [0, 0, 50],
      [2, 200, 0],
      [3, 300, 100],
    ]);
    expect(line.paths).toEqual(["M 0 50", "M 200 0 L 300 100"]);
    // Without a given top, the largest value rounded up.
    expect(chartLine([30, 70], { width: 10, height: 10 }).max).toBe(100);
    expect(chartLine([null, null], { width: 10, height: 10 })).toEqual({ max: 1, points: [], paths: [] });
    expect(chartLine([4], { width: 10, height: 10 }).points[0]).toMatchObject({ x: 5 });
  });

  it("writes durations short", () => {
    expect([null, 0, 0.5, 4.44, 42.4, 90, 7200].map(formatSeconds)).toEqual([
      "—",
      "0 s",
      "0.5 s",
      "4.4 s",
      "42 s",
      "1.5 min",
      "2.0 h",
    ]);
  });

  it("keeps a tag's own changes, newest first, each said in words", () => {
    const ev = (id: number, type: string, data: Record<string, unknown>) => ({ id, type, data });
    const history = tagHistory(
      [
        ev(1, "tag.created", { tag: "release" }),
        ev(2, "tag.created", { tag: "base" }),
        ev(3, "tag.parent_added", { tag: "release", parent: "base", priority: 10 }),
        ev(4, "package.add", { tag: "release", packages: ["hello", "world"], owner: "alice" }),
        ev(5, "tag.parent_added", { tag: "updates", parent: "release", priority: 0 }),
        ev(6, "tag.edited", { tag: "release", changes: { locked: true } }),
        ev(7, "tag.something_new", { tag: "release" }),
      ],
      "release",
    );
    expect(history.map((e) => [e.id, e.change])).toEqual([
      [7, "tag.something_new"],
      [6, "edited: locked = true"],
      [4, "hello, world added (owner alice)"],
      [3, "parent base added (priority 10)"],
      [1, "created"],
    ]);
  });
});
