import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isGroupAlive, runProcess } from "../../src/worker/executor.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kiln-exec-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Alive and not a zombie (orphaned zombies may never be reaped where PID 1 does not). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Runs `script` under sh; `pids` are the numbers it prints on its first line. */
function run(script: string, opts: { killGrace: number; abortOnReady?: boolean }) {
  const controller = new AbortController();
  let output = "";
  let gotPids: (pids: number[]) => void = () => undefined;
  const pids = new Promise<number[]>((resolve) => (gotPids = resolve));
  const done = runProcess("/bin/sh", ["-c", script], {
    cwd: dir,
    signal: controller.signal,
    killGrace: opts.killGrace,
    onOutput: (text) => {
      output += text;
      const first = /^([\d ]+)\n/.exec(output);
      if (first?.[1]) gotPids(first[1].trim().split(" ").map(Number));
      if (opts.abortOnReady && /^ready$/m.test(output)) controller.abort();
    },
  });
  return { pids, done };
}

describe("runProcess", () => {
  it("streams stdout and stderr and reports the exit code", async () => {
    let output = "";
    const out = await runProcess("/bin/sh", ["-c", 'echo "out é"; echo err >&2; exit 3'], {
      cwd: dir,
      signal: new AbortController().signal,
      killGrace: 1,
      onOutput: (text) => (output += text),
    });
    expect(out).toEqual({ exitCode: 3, signal: null });
    expect(output).toContain("out é\n");
    expect(output).toContain("err\n");
  });

  it("runs in cwd with exactly the environment given", async () => {
    let output = "";
    await runProcess("/bin/sh", ["-c", 'pwd; echo "x=$KILN_X home=$HOME"'], {
      cwd: dir,
      env: { KILN_X: "1", PATH: "/usr/bin:/bin" },
      signal: new AbortController().signal,
      killGrace: 1,
      onOutput: (text) => (output += text),
    });
    expect(output).toBe(`${dir}\nx=1 home=\n`);
  });

  it("reports the signal that ended the process", async () => {
    const out = await runProcess("/bin/sh", ["-c", "kill -USR1 $$"], {
      cwd: dir,
      signal: new AbortController().signal,
      killGrace: 1,
      onOutput: () => undefined,
    });
    expect(out).toEqual({ exitCode: null, signal: "SIGUSR1" });
  });

  it("on abort sends SIGTERM to the whole process group", async () => {
    const r = run("sleep 300 & echo $!; echo ready; wait", { killGrace: 30, abortOnReady: true });
    const [grandchild = 0] = await r.pids;
    const out = await r.done;
    expect(out).toEqual({ exitCode: null, signal: "SIGTERM" });
    expect(isAlive(grandchild)).toBe(false);
  });

  it("SIGKILLs a group that ignores SIGTERM after the grace, grandchildren included", async () => {
    const r = run('trap "" TERM; sleep 300 & echo $!; echo ready; wait', {
      killGrace: 1,
      abortOnReady: true,
    });
    const [grandchild = 0] = await r.pids;
    const out = await r.done;
    expect(out).toEqual({ exitCode: null, signal: "SIGKILL" });
    expect(isAlive(grandchild)).toBe(false);
  });

  it("kills what the leader left behind in its group when it exits", async () => {
    const r = run("sleep 300 >/dev/null 2>&1 & echo $!", { killGrace: 5 });
    const [leftover = 0] = await r.pids;
    const out = await r.done;
    expect(out).toEqual({ exitCode: 0, signal: null });
    expect(isAlive(leftover)).toBe(false);
  });

  it("waits for the whole group before resolving", async () => {
    // The leader dies on TERM at once; its child ignores TERM and must be killed after the grace.
    const r = run('(trap "" TERM; sleep 300) & echo $$ $!; echo ready; wait', {
      killGrace: 1,
      abortOnReady: true,
    });
    const [leader = 0, child = 0] = await r.pids;
    const out = await r.done;
    expect(out).toEqual({ exitCode: null, signal: "SIGTERM" });
    expect(isAlive(child)).toBe(false);
    expect(await isGroupAlive(leader)).toBe(false);
  });

  it("spawns nothing when already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    let called = false;
    const out = await runProcess("/bin/sh", ["-c", "echo hi"], {
      cwd: dir,
      signal: controller.signal,
      killGrace: 1,
      onOutput: () => (called = true),
    });
    expect(out).toEqual({ exitCode: null, signal: null });
    expect(called).toBe(false);
  });

  it("rejects with a clear error when the command does not exist", async () => {
    await expect(
      runProcess("/nonexistent/kiln-tool", [], {
        cwd: dir,
        signal: new AbortController().signal,
        killGrace: 1,
        onOutput: () => undefined,
      }),
    ).rejects.toThrow(/cannot run \/nonexistent\/kiln-tool .*ENOENT/);
  });
});
