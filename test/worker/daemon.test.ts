import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import type { ClaimedTask, HelloRequest, LeaseStatus, TaskJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { mountsUnder } from "../../src/worker/buildroot-mount.js";
import { Worker } from "../../src/worker/daemon.js";
import { TaskFailure, type HandlerMap, type TaskHandler } from "../../src/worker/handler.js";
import { sleepHandler } from "../../src/worker/handlers/sleep.js";

/**
 * A smoke test of the daemon's loop against a scripted stand-in for the hub's worker calls;
 * the real hub is exercised by the end-to-end tests.
 */
class FakeHub {
  capacity = 2;
  queue: ClaimedTask[] = [];
  hellos: HelloRequest[] = [];
  claims = 0;
  calls: { call: string; id: number; epoch: number; body?: unknown }[] = [];
  statuses = new Map<number, LeaseStatus>();
  /** Tasks handed out and not finished, failed or released. */
  holding = new Set<number>();
  logs = new Map<number, string>();
  /** Errors the next calls of a kind throw. */
  failNext: Record<string, KilnError[]> = {};
  private nextId = 1;

  add(method: string, args: unknown = {}, weight = 1): number {
    const id = this.nextId++;
    this.queue.push({ task: fakeTask(id, method, args, weight), epoch: 1 });
    return id;
  }

  private maybeFail(kind: string): void {
    const err = this.failNext[kind]?.shift();
    if (err) throw err;
  }

  private record(call: string, id: number, epoch: number, body?: unknown, log?: { data: string }) {
    this.maybeFail(call);
    if (call !== "start") this.holding.delete(id);
    if (log) this.logs.set(id, (this.logs.get(id) ?? "") + log.data);
    this.calls.push({ call, id, epoch, ...(body === undefined ? {} : { body }) });
    return Promise.resolve(fakeTask(id, "x", {}, 1));
  }

  callsFor(id: number): string[] {
    return this.calls.filter((c) => c.id === id).map((c) => c.call);
  }

  readonly client = {
    hub: "http://fake",
    hello: async (req: HelloRequest) => {
      await Promise.resolve();
      this.maybeFail("hello");
      this.hellos.push(req);
      return { host: { capacity: this.capacity }, heartbeatInterval: 1, requeued: [] };
    },
    claim: async (_wait: number, signal?: AbortSignal): Promise<ClaimedTask | undefined> => {
      this.maybeFail("claim");
      this.claims++;
      // Like the hub, hand out nothing beyond the host's capacity.
      const next = this.holding.size < this.capacity ? this.queue.shift() : undefined;
      if (next) {
        this.holding.add(next.task.id);
        return next;
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        const t = setTimeout(done, 20);
        signal?.addEventListener("abort", done, { once: true });
      });
      if (signal?.aborted) throw new DOMException("aborted", "AbortError");
      return undefined;
    },
    heartbeat: async (running: { id: number; epoch: number }[]) => {
      await Promise.resolve();
      this.maybeFail("heartbeat");
      return {
        tasks: running.map((r) => ({ id: r.id, status: this.statuses.get(r.id) ?? ("ok" as const) })),
      };
    },
    startTask: (id: number, epoch: number) => this.record("start", id, epoch),
    appendLog: async (id: number, _epoch: number, _offset: number, data: string) => {
      await Promise.resolve();
      this.logs.set(id, (this.logs.get(id) ?? "") + data);
      return { size: 0 };
    },
    // The last chunk of the log comes with the outcome.
    completeTask: (id: number, epoch: number, result: unknown, log?: { data: string }) =>
      this.record("complete", id, epoch, result, log),
    failTask: (id: number, epoch: number, error: unknown, log?: { data: string }) =>
      this.record("fail", id, epoch, error, log),
    releaseTask: (id: number, epoch: number) => this.record("release", id, epoch),
  };
}

function fakeTask(id: number, method: string, args: unknown, weight: number): TaskJson {
  return {
    id,
    method,
    args,
    state: "assigned",
    waiting: false,
    priority: 20,
    arch: "noarch",
    channel: "default",
    weight,
    parentId: null,
    label: null,
    hostId: 1,
    owner: "test",
    attempts: 1,
    infraFailures: 0,
    leaseEpoch: 1,
    timeout: 3600,
    runAt: new Date(0).toISOString(),
    createdAt: new Date(0).toISOString(),
    startedAt: null,
    completedAt: null,
    result: null,
    error: null,
  };
}

/** A handler that waits until the test opens its gate. */
function gated() {
  let open: () => void = () => undefined;
  const gate = new Promise<void>((r) => (open = r));
  const started: number[] = [];
  const handler: TaskHandler = async (ctx) => {
    started.push(ctx.task.id);
    await gate;
    return { result: { id: ctx.task.id } };
  };
  return { handler, started, open: () => open() };
}

let workDir: string;
let worker: Worker | undefined;
beforeEach(async () => {
  workDir = await mkdtemp(path.join(os.tmpdir(), "kiln-worker-"));
});
afterEach(async () => {
  await worker?.stop({ now: true });
  worker = undefined;
  await rm(workDir, { recursive: true, force: true });
});

function startWorker(hub: FakeHub, handlers: HandlerMap, opts: { shutdownGrace?: number } = {}): Worker {
  worker = new Worker({
    client: hub.client as unknown as KilnClient,
    handlers,
    workDir,
    log: pino({ level: "silent" }),
    capabilities: [],
    version: "test",
    killGrace: 1,
    claimWait: 1,
    ...opts,
  });
  return worker;
}

describe("Worker", () => {
  it.runIf(process.getuid?.() === 0)(
    "unmounts and removes the build roots a crashed run left, and keeps its base cache",
    async () => {
      // What a worker killed mid-build leaves: a task directory and its root, still mounted.
      const merged = path.join(workDir, "task-7-2.root", "merged");
      await mkdir(merged, { recursive: true });
      await mkdir(path.join(workDir, "task-7-2"));
      await mkdir(path.join(workDir, "buildroot-cache", "x"), { recursive: true });
      execFileSync("mount", ["-t", "tmpfs", "kiln-test", merged]);
      try {
        expect(await mountsUnder(workDir)).toEqual([merged]);
        const w = startWorker(new FakeHub(), new Map());
        await w.start();
        expect(await mountsUnder(workDir)).toEqual([]);
        expect((await readdir(workDir)).sort()).toEqual(["buildroot-cache"]);
      } finally {
        spawnSync("umount", ["-l", merged]);
      }
    },
  );

  it("runs tasks concurrently up to the host's capacity", async () => {
    const hub = new FakeHub();
    const g = gated();
    const ids = [hub.add("gate"), hub.add("gate"), hub.add("gate")];
    const w = startWorker(hub, new Map([["gate", g.handler]]));
    await w.start();
    await vi.waitFor(() => expect(g.started).toHaveLength(2));
    expect(hub.queue).toHaveLength(1); // the third waits for capacity
    expect(w.running.map((r) => r.id).sort()).toEqual([ids[0], ids[1]]);
    g.open();
    await vi.waitFor(() => expect(hub.calls.filter((c) => c.call === "complete")).toHaveLength(3));
    expect(hub.calls.find((c) => c.id === ids[2] && c.call === "complete")?.body).toEqual({ id: ids[2] });
    expect(await readdir(workDir)).toEqual([]);
  });

  it("reports failures: TaskFailure fields, other errors, unknown methods", async () => {
    const hub = new FakeHub();
    const failing = hub.add("failing");
    const throwing = hub.add("throwing");
    const unknown = hub.add("nope");
    const w = startWorker(
      hub,
      new Map<string, TaskHandler>([
        [
          "failing",
          () => Promise.reject(new TaskFailure("BUILD_FAILED", "make failed", { exitCode: 2, infra: false })),
        ],
        ["throwing", () => Promise.reject(new Error("boom"))],
      ]),
    );
    await w.start();
    await vi.waitFor(() => expect(hub.calls.filter((c) => c.call === "fail")).toHaveLength(3));
    const errorOf = (id: number) => hub.calls.find((c) => c.id === id && c.call === "fail")?.body;
    expect(errorOf(failing)).toEqual({
      code: "BUILD_FAILED",
      message: "make failed",
      exitCode: 2,
      infra: false,
    });
    expect(errorOf(throwing)).toEqual({ code: "TASK_FAILED", message: "boom" });
    expect(errorOf(unknown)).toMatchObject({ code: "UNKNOWN_METHOD" });
  });

  it("runs sleep in a child process and streams its log", async () => {
    const hub = new FakeHub();
    const id = hub.add("sleep", { seconds: 1, fail: false });
    const zero = hub.add("sleep", { seconds: 0, fail: true });
    const w = startWorker(hub, new Map([["sleep", sleepHandler]]));
    await w.start();
    await vi.waitFor(() => expect(hub.callsFor(id)).toEqual(["start", "complete"]), { timeout: 10_000 });
    expect(hub.logs.get(id)).toBe("sleep: 1/1\n");
    expect(hub.calls.find((c) => c.id === id && c.call === "complete")?.body).toEqual({ slept: 1 });
    expect(hub.calls.find((c) => c.id === zero && c.call === "fail")?.body).toMatchObject({
      code: "TASK_FAILED",
    });
  });

  it("kills a task the hub canceled and reports nothing for it", async () => {
    const hub = new FakeHub();
    const id = hub.add("sleep", { seconds: 60, fail: false });
    const w = startWorker(hub, new Map([["sleep", sleepHandler]]));
    await w.start();
    await vi.waitFor(() => expect(hub.logs.get(id)).toContain("sleep: 1/60"), { timeout: 10_000 });
    hub.statuses.set(id, "canceled");
    await vi.waitFor(() => expect(w.running).toEqual([]), { timeout: 10_000 });
    expect(hub.callsFor(id)).toEqual(["start"]);
  });

  it("on stop hands running tasks back instead of failing them", async () => {
    const hub = new FakeHub();
    const id = hub.add("sleep", { seconds: 60, fail: false });
    const w = startWorker(hub, new Map([["sleep", sleepHandler]]), { shutdownGrace: 0.1 });
    await w.start();
    await vi.waitFor(() => expect(hub.callsFor(id)).toEqual(["start"]));
    await w.stop();
    expect(hub.callsFor(id)).toEqual(["start", "release"]);
    expect(w.running).toEqual([]);
    await w.wait();
  });

  it("retries while the hub is unreachable and says hello again with its running tasks", async () => {
    const hub = new FakeHub();
    const down = () => new KilnError("HUB_UNREACHABLE", "connection refused");
    hub.failNext = { hello: [down(), down()], complete: [down()] };
    const g = gated();
    const id = hub.add("gate");
    const w = startWorker(hub, new Map([["gate", g.handler]]));
    await w.start();
    expect(hub.hellos).toHaveLength(1);
    await vi.waitFor(() => expect(g.started).toEqual([id]));
    hub.failNext.claim = [down()];
    await vi.waitFor(() => expect(hub.hellos).toHaveLength(2));
    expect(hub.hellos[1]?.running).toEqual([{ id, epoch: 1 }]);
    g.open();
    await vi.waitFor(() => expect(hub.callsFor(id)).toEqual(["start", "complete"]));
  });

  it("discards an outcome the hub no longer wants", async () => {
    const hub = new FakeHub();
    hub.failNext = { complete: [new KilnError("LEASE_STALE", undefined, { status: 409 })] };
    const id = hub.add("gate");
    const g = gated();
    g.open();
    const w = startWorker(hub, new Map([["gate", g.handler]]));
    await w.start();
    await vi.waitFor(() => expect(w.running).toEqual([]));
    await vi.waitFor(() => expect(hub.callsFor(id)).toEqual(["start"]));
    expect(hub.failNext.complete).toEqual([]);
  });

  it("lets running tasks finish within the shutdown grace", async () => {
    const hub = new FakeHub();
    const g = gated();
    const id = hub.add("gate");
    const w = startWorker(hub, new Map([["gate", g.handler]]), { shutdownGrace: 30 });
    await w.start();
    await vi.waitFor(() => expect(g.started).toEqual([id]));
    const stopped = w.stop();
    g.open();
    await stopped;
    expect(hub.callsFor(id)).toEqual(["start", "complete"]);
  });

  it("fails a task whose result the hub refuses", async () => {
    const hub = new FakeHub();
    hub.failNext = { complete: [new KilnError("PAYLOAD_TOO_LARGE", "too big", { status: 413 })] };
    const g = gated();
    g.open();
    const id = hub.add("gate");
    const w = startWorker(hub, new Map([["gate", g.handler]]));
    await w.start();
    await vi.waitFor(() => expect(hub.callsFor(id)).toEqual(["start", "fail"]));
    expect(hub.calls.find((c) => c.id === id && c.call === "fail")?.body).toMatchObject({
      code: "PAYLOAD_TOO_LARGE",
    });
  });

  it("stops when the hub revokes its token", async () => {
    const hub = new FakeHub();
    const w = startWorker(hub, new Map());
    await w.start();
    hub.failNext.claim = [new KilnError("TOKEN_INVALID", undefined, { status: 401 })];
    await expect(w.wait()).rejects.toMatchObject({ code: "TOKEN_INVALID" });
  });

  it("refuses to start with a rejected token", async () => {
    const hub = new FakeHub();
    hub.failNext = { hello: [new KilnError("TOKEN_INVALID", undefined, { status: 401 })] };
    const w = startWorker(hub, new Map());
    await expect(w.start()).rejects.toMatchObject({ code: "TOKEN_INVALID" });
  });
});
