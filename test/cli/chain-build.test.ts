import { afterEach, describe, expect, it, vi } from "vitest";
import { describeChainProgress, formatChainReport, parseChainGroups } from "../../src/cli/chain-build.js";
import { run } from "../../src/cli/main.js";
import type { ChainBuildJson, ChainEntryJson, TaskJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { taskJson } from "../helpers/task-json.js";

function usageError(args: string[]): string {
  try {
    parseChainGroups(args);
  } catch (err) {
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe("VALIDATION_FAILED");
    return (err as KilnError).message;
  }
  throw new Error(`${args.join(" ")} was accepted`);
}

describe("parseChainGroups", () => {
  it("splits the sources into groups at each ':' standing alone", () => {
    expect(parseChainGroups(["a"])).toEqual([["a"]]);
    expect(parseChainGroups(["a", "b"])).toEqual([["a", "b"]]);
    expect(parseChainGroups(["a", "b", ":", "c", ":", "d", "e"])).toEqual([["a", "b"], ["c"], ["d", "e"]]);
    // Only a ':' of its own separates: one inside a path or URL is part of it.
    expect(parseChainGroups(["git@host:x.git#main", "::", "./a:b"])).toEqual([
      ["git@host:x.git#main", "::", "./a:b"],
    ]);
  });

  it("refuses an empty group, saying where it is", () => {
    expect(usageError([])).toMatch(/at least one source/);
    expect(usageError([":", "a"])).toMatch(/starts with ":"/);
    expect(usageError(["a", ":"])).toMatch(/ends with ":"/);
    expect(usageError(["a", ":", ":", "b"])).toMatch(/group 2 is empty/);
    expect(usageError([":"])).toMatch(/starts with ":"/);
  });
});

describe("kiln chain-build: usage errors exit 2 before anything is sent", () => {
  afterEach(() => vi.restoreAllMocks());

  it("an empty group, or no source at all", async () => {
    const err = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    // The hub does not exist: reaching it would exit 6, not 2.
    const hub = ["--hub", "http://127.0.0.1:1"];
    expect(await run([...hub, "chain-build", "t", "a", ":"])).toBe(2);
    expect(await run([...hub, "chain-build", "t", ":", "a"])).toBe(2);
    expect(await run([...hub, "chain-build", "t"])).toBe(2);
    expect(await run([...hub, "chain-build", "t", "/nonexistent/kiln-src", ":", "b"])).toBe(2);
    const printed = err.mock.calls.map((c) => String(c[0])).join("");
    expect(printed).toMatch(/ends with ":"/);
    expect(printed).toMatch(/nonexistent\/kiln-src does not exist/);
  });
});

function task(over: Partial<TaskJson> = {}): TaskJson {
  return taskJson({ id: 7, method: "chainBuild", state: "open", waiting: true, channel: "hub", ...over });
}

function entry(
  group: number,
  index: number,
  nvr: string,
  over: Partial<ChainEntryJson> = {},
): ChainEntryJson {
  return { group, index, nvr, buildId: null, taskId: null, state: "not started", error: null, ...over };
}

function chain(builds: ChainEntryJson[], over: Partial<ChainBuildJson> = {}): ChainBuildJson {
  return {
    task: task(),
    target: "dist-target",
    buildTag: "dist-build",
    destTag: "dist",
    groups: Math.max(...builds.map((b) => b.group)),
    builds,
    repoWaits: [],
    current: null,
    ...over,
  };
}

describe("describeChainProgress", () => {
  it("queued, building a group, waiting for the repo, ended", () => {
    const lib = entry(1, 1, "libx/1.0", { buildId: 3, taskId: 10, state: "building" });
    const tool = entry(1, 2, "tool/1.0", { buildId: 4, taskId: 11, state: "complete" });
    const app = entry(2, 1, "app/1.0");
    expect(describeChainProgress(chain([lib, tool, app], { task: task({ state: "free" }) }))).toBe(
      "chain build 7: queued",
    );
    expect(describeChainProgress(chain([lib, tool, app], { current: { group: 1, phase: "building" } }))).toBe(
      "chain build 7, group 1/2: libx/1.0 building, tool/1.0 complete",
    );
    expect(
      describeChainProgress(
        chain([lib, tool, app], { current: { group: 1, phase: "waiting for the repo" } }),
      ),
    ).toBe("chain build 7, group 1/2: built; waiting for dist-build's repository to contain it");
    expect(describeChainProgress(chain([lib], { task: task({ state: "failed" }) }))).toBe(
      "chain build 7: failed",
    );
  });
});

describe("formatChainReport", () => {
  it("one row per build: group, build, id, task, state, error code", () => {
    const text = formatChainReport(
      chain([
        entry(1, 1, "libx/1.0", { buildId: 3, taskId: 10, state: "complete" }),
        entry(2, 1, "app/1.0", {
          buildId: 4,
          taskId: 12,
          state: "failed",
          error: { code: "BUILD_FAILED", message: "boom" },
        }),
        entry(3, 1, "last/1.0"),
      ]),
    );
    expect(text.split("\n")).toEqual([
      "GROUP  BUILD     ID  TASK  STATE        ERROR",
      "    1  libx/1.0   3    10  complete     -",
      "    2  app/1.0    4    12  failed       BUILD_FAILED",
      "    3  last/1.0   -     -  not started  -",
      "",
    ]);
  });
});
