import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { buildSleepRequest, formatTaskDetail, parseLock } from "../../src/cli/task.js";
import { describeTask, waitingLine } from "../../src/cli/task-watch.js";
import type { TaskDetailJson } from "../../src/client/types.js";

describe("parseLock", () => {
  it("makes a lock exclusive unless it ends in :shared", () => {
    expect(parseLock("pool:main")).toEqual({ resource: "pool:main", exclusive: true });
    expect(parseLock("repo:main:shared")).toEqual({ resource: "repo:main", exclusive: false });
    expect(parseLock("repo:main:exclusive")).toEqual({ resource: "repo:main", exclusive: true });
    expect(parseLock("publish:ubuntu/noble")).toEqual({ resource: "publish:ubuntu/noble", exclusive: true });
    expect(parseLock("x")).toEqual({ resource: "x", exclusive: true });
  });

  it("refuses a lock without a resource", () => {
    for (const bad of ["", ":shared", " :exclusive"])
      expect(() => parseLock(bad), bad).toThrow(InvalidArgumentError);
  });
});

describe("buildSleepRequest", () => {
  it("makes one sleep task with the flags given", () => {
    expect(
      buildSleepRequest(2, {
        priority: 90,
        arch: "arm64",
        weight: 0.5,
        timeout: 60,
        lock: [{ resource: "repo:a", exclusive: false }],
      }),
    ).toEqual({
      method: "sleep",
      args: { seconds: 2, fail: false },
      priority: 90,
      arch: "arm64",
      weight: 0.5,
      timeout: 60,
      locks: [{ resource: "repo:a", exclusive: false }],
    });
  });

  it("leaves out what was not given", () => {
    expect(buildSleepRequest(0, { fail: true, lock: [] })).toEqual({
      method: "sleep",
      args: { seconds: 0, fail: true },
    });
  });

  it("with --subtasks makes a group whose sleeps take the placement flags", () => {
    const req = buildSleepRequest(1, {
      subtasks: 3,
      arch: "amd64",
      channel: "bigmem",
      weight: 2,
      priority: 5,
      fail: true,
    });
    const sub = {
      method: "sleep",
      args: { seconds: 1, fail: true },
      arch: "amd64",
      channel: "bigmem",
      weight: 2,
    };
    expect(req).toEqual({ method: "group", args: { tasks: [sub, sub, sub] }, priority: 5 });
  });
});

function task(over: Partial<TaskDetailJson> = {}): TaskDetailJson {
  return {
    id: 7,
    method: "sleep",
    args: { seconds: 1, fail: false },
    state: "free",
    waiting: false,
    priority: 20,
    arch: "arm64",
    channel: "default",
    weight: 1,
    parentId: null,
    label: null,
    hostId: null,
    owner: "alice",
    attempts: 0,
    infraFailures: 0,
    leaseEpoch: 0,
    timeout: 7200,
    runAt: "2025-01-01T00:00:00.000Z",
    createdAt: "2025-01-01T00:00:00.000Z",
    startedAt: null,
    completedAt: null,
    result: null,
    error: null,
    why: "no host has arch arm64",
    host: null,
    locks: [{ resource: "repo:a", exclusive: false }],
    subtasks: [],
    ...over,
  };
}

describe("task display", () => {
  it("puts why a free task waits right under its heading", () => {
    const lines = formatTaskDetail(task(), Date.parse("2025-01-01T00:00:05Z")).split("\n");
    expect(lines[0]).toBe("task 7  sleep  free");
    expect(lines[1]).toBe("waiting: no host has arch arm64");
    expect(lines).toContain("locks     repo:a (shared)");
  });

  it("does not say waiting twice", () => {
    expect(waitingLine("waiting for lock repo:a, queued earlier by task 3")).toBe(
      "waiting for lock repo:a, queued earlier by task 3",
    );
    expect(waitingLine("queued; 1 matching host(s) are busy")).toBe(
      "waiting: queued; 1 matching host(s) are busy",
    );
  });

  it("shows the error of a failed task with its exit code", () => {
    const text = formatTaskDetail(
      task({ state: "failed", why: null, error: { code: "TASK_FAILED", message: "boom", exitCode: 2 } }),
    );
    expect(text).toMatch(/^error +boom \[TASK_FAILED\]; exit code 2$/m);
    expect(text).not.toMatch(/waiting/);
  });

  it("sums up subtasks by state", () => {
    const parent = task({ state: "open", waiting: true, why: null, method: "group", subtasks: [8, 9, 10] });
    const subs = [
      task({ id: 8, state: "closed" }),
      task({ id: 9, state: "closed" }),
      task({ id: 10, state: "open" }),
    ];
    expect(describeTask(parent, subs)).toBe(
      "7 group open (waiting for subtasks) [subtasks: 1 open, 2 closed]",
    );
    expect(describeTask(task({ state: "open", why: null, host: "b1" }))).toBe("7 sleep open on b1");
  });
});
