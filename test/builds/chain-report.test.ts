import { describe, expect, it } from "vitest";
import {
  buildLabel,
  chainReport,
  chainResult,
  describeChainStop,
  duplicateNvrs,
  pathsToDest,
  repoLabel,
  visibleThrough,
  type ChainBuildArgs,
  type ChainEntry,
} from "../../src/builds/chain-report.js";
import { walkInheritance, type InheritanceLink } from "../../src/builds/inheritance.js";
import type { TaskJson, TaskState } from "../../src/tasks/types.js";
import { taskJson } from "../helpers/task-json.js";

function link(tagId: number, parentId: number, priority: number, pkgFilter = ""): InheritanceLink {
  return { tagId, parentId, priority, maxdepth: null, intransitive: false, noconfig: false, pkgFilter };
}

function walk(tagId: number, links: InheritanceLink[]) {
  const map = new Map<number, InheritanceLink[]>();
  for (const l of links) map.set(l.tagId, [...(map.get(l.tagId) ?? []), l]);
  return walkInheritance(tagId, map);
}

function entry(nvr: string): ChainEntry {
  const [source = "", version = ""] = nvr.split("/");
  return { source, version, upload: `u-${source}`, input: { type: "tarball", file: "source.tar.gz" } };
}

function chain(...groups: string[][]): ChainBuildArgs {
  return {
    target: { id: 1, name: "t", buildTag: "dist-build", destTag: "dist" },
    groups: groups.map((g) => g.map(entry)),
  };
}

let nextId = 100;
/** A subtask of the chain by its label; a build's args name its build (task id + 1000). */
function subtask(label: string, state: TaskState, extra: Partial<TaskJson> = {}): TaskJson {
  const id = nextId++;
  const method = label.startsWith("repo") ? "waitRepo" : "build";
  return taskJson({ id, method, args: { buildId: id + 1000 }, state, parentId: 1, label, ...extra });
}

describe("pathsToDest / visibleThrough: can later groups see earlier builds?", () => {
  it("a build tag inheriting its destination tag sees it; one that does not, does not", () => {
    // 1 = dist-build, 2 = dist, 3 = base: dist-build → dist → base.
    const links = [link(1, 2, 10), link(2, 3, 10)];
    expect(pathsToDest(walk(1, links), 1, 2)).toEqual([[]]);
    expect(pathsToDest(walk(1, links), 1, 3)).toEqual([[]]);
    // The other way round (dist inherits dist-build): the build tag never sees dist.
    expect(pathsToDest(walk(1, [link(2, 1, 10)]), 1, 2)).toEqual([]);
  });

  it("the same tag as build and destination tag sees itself", () => {
    expect(pathsToDest([], 4, 4)).toEqual([[]]);
  });

  it("package filters on the way decide per package", () => {
    const paths = pathsToDest(walk(1, [link(1, 2, 10, "lib.*")]), 1, 2);
    expect(paths).toEqual([["lib.*"]]);
    expect(visibleThrough(paths, "libfoo")).toBe(true);
    expect(visibleThrough(paths, "hello")).toBe(false);
    // A second, unfiltered way lets everything through.
    const two = pathsToDest(walk(1, [link(1, 2, 10, "lib.*"), link(1, 3, 20), link(3, 2, 10)]), 1, 2);
    expect(visibleThrough(two, "hello")).toBe(true);
  });
});

describe("duplicateNvrs", () => {
  it("names a version given twice, in one group or across groups, once", () => {
    expect(duplicateNvrs(chain(["a/1", "b/1"], ["c/1"]).groups)).toEqual([]);
    expect(duplicateNvrs(chain(["a/1", "a/1"], ["a/1", "b/1"], ["b/1"]).groups)).toEqual(["a/1", "b/1"]);
    // Two versions of one package are two builds.
    expect(duplicateNvrs(chain(["a/1"], ["a/2"]).groups)).toEqual([]);
  });
});

describe("chainReport", () => {
  it("before anything started: every build not started, no current step", () => {
    const report = chainReport(chain(["a/1", "b/1"], ["c/1"]), [], "free");
    expect(report.groups).toBe(2);
    expect(report.builds.map((b) => [b.group, b.index, b.nvr, b.state, b.buildId])).toEqual([
      [1, 1, "a/1", "not started", null],
      [1, 2, "b/1", "not started", null],
      [2, 1, "c/1", "not started", null],
    ]);
    expect(report.current).toBeNull();
  });

  it("finds builds by label, maps task states, and says what the chain does now", () => {
    const args = chain(["a/1", "b/1"], ["c/1"]);
    const a = subtask(buildLabel(1, 1), "closed");
    const b = subtask(buildLabel(1, 2), "open");
    let report = chainReport(args, [a, b], "open");
    expect(report.builds.map((x) => x.state)).toEqual(["complete", "building", "not started"]);
    expect(report.builds[0]).toMatchObject({ buildId: a.id + 1000, taskId: a.id });
    expect(report.current).toEqual({ group: 1, phase: "building" });

    const b2 = { ...b, state: "closed" as const };
    const wait = subtask(repoLabel(1), "open");
    report = chainReport(args, [a, b2, wait], "open");
    expect(report.repoWaits).toEqual([{ group: 1, taskId: wait.id, state: "open", error: null }]);
    expect(report.current).toEqual({ group: 1, phase: "waiting for the repo" });

    const c = subtask(buildLabel(2, 1), "free");
    report = chainReport(args, [a, b2, { ...wait, state: "closed" }, c], "open");
    expect(report.current).toEqual({ group: 2, phase: "building" });
    // Once the chain ended there is no current step.
    expect(chainReport(args, [a, b2, c], "closed").current).toBeNull();
  });

  it("ignores subtasks of other labels", () => {
    const report = chainReport(chain(["a/1"]), [
      subtask("buildSrc", "open"),
      subtask(buildLabel(2, 1), "open"),
    ]);
    expect(report.builds.map((b) => b.state)).toEqual(["not started"]);
  });
});

describe("describeChainStop / chainResult", () => {
  it("says what failed and why, then what built, was canceled and never started", () => {
    const args = chain(["a/1"], ["b/1", "c/1"], ["d/1"]);
    const error = { code: "BUILD_FAILED", message: "buildArch for amd64 (task 9) failed: exit 2" };
    const report = chainReport(args, [
      subtask(buildLabel(1, 1), "closed"),
      subtask(repoLabel(1), "closed"),
      subtask(buildLabel(2, 1), "failed", { error }),
      subtask(buildLabel(2, 2), "canceled", { error: { code: "TASK_CANCELED", message: "x" } }),
    ]);
    expect(describeChainStop(report, "group 2 of 3 did not build")).toBe(
      "group 2 of 3 did not build; b/1 failed (BUILD_FAILED: buildArch for amd64 (task 9) failed: exit 2); " +
        "built: a/1; canceled: c/1; never started: d/1",
    );
  });

  it("lists every build with its id, group and state", () => {
    const args = chain(["a/1"], ["b/1"]);
    const a = subtask(buildLabel(1, 1), "closed");
    const b = subtask(buildLabel(2, 1), "closed");
    expect(chainResult(chainReport(args, [a, b]))).toEqual({
      builds: [
        { buildId: a.id + 1000, nvr: "a/1", group: 1, state: "complete" },
        { buildId: b.id + 1000, nvr: "b/1", group: 2, state: "complete" },
      ],
    });
  });
});
