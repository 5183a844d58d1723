import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { reachableWorkDir } from "../../src/worker/work-dir.js";
import type { TaskJson } from "../../src/client/types.js";
import { createPgDatabase, DIALECTS, postgresAvailable } from "../helpers/db.js";
import {
  freePort,
  startHubProcess,
  startWorkerProcess,
  stop,
  waitFor,
  type HubProc,
  type Proc,
} from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

/** Processes whose environment names this task: the sleep handler's process group. */
/**
 * The live processes of a task's job: they carry KILN_TASK_ID and run in a work directory under
 * one of `under` (other test files run hubs of their own at the same time, with the same task ids).
 */
function processesOfTask(taskId: number, under: readonly string[]): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (!env.split("\0").includes(`KILN_TASK_ID=${taskId}`)) continue;
      const cwd = readlinkSync(`/proc/${entry}/cwd`);
      if (under.some((root) => cwd.startsWith(root))) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

describe.each(dialects)("faults, with real processes, on %s", (dialect) => {
  let dir: string;
  const workRoots: string[] = [];
  let db: string | undefined;
  let dropDb: (() => Promise<void>) | undefined;
  const procs: Proc[] = [];
  let hub: HubProc;
  let port: number;

  const startHub = async (extra: Parameters<typeof startHubProcess>[0]["engine"] = {}) => {
    hub = await startHubProcess({
      dataDir: path.join(dir, "data"),
      port,
      worker: false,
      engine: extra,
      ...(db ? { db } : {}),
    });
    procs.push(hub);
    return hub;
  };
  const addWorker = async (name: string, capacity = 2) => {
    const { token } = await hub.admin.addHost({ name, arches: ["amd64"], channels: ["default"], capacity });
    const work = path.join(dir, `work-${name}`);
    workRoots.push(work, reachableWorkDir(work).dir); // where the worker really puts its jobs
    const w = startWorkerProcess(hub.url, token, work);
    procs.push(w);
    await waitFor(`worker ${name} online`, async () => (await hub.admin.getHost(name)).ready);
    return w;
  };
  const task = (id: number) => hub.admin.getTask(id);
  const untilState = (id: number, states: string[], ms = 30_000): Promise<TaskJson> =>
    waitFor(
      `task ${id} in ${states.join("/")}`,
      async () => {
        const t = await task(id);
        return states.includes(t.state) ? t : undefined;
      },
      ms,
    );

  beforeAll(async () => {
    if (dialect === "postgres") {
      const pg = await createPgDatabase();
      db = pg.url;
      dropDb = () => pg.drop();
    }
  });
  afterAll(async () => {
    await dropDb?.();
  });
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => stop(p, "SIGKILL")));
    rmSync(dir, { recursive: true, force: true });
    if (dropDb && db) {
      await dropDb();
      const pg = await createPgDatabase();
      db = pg.url;
      dropDb = () => pg.drop();
    }
  });
  const fresh = async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-"));
    port = await freePort();
  };

  it("reruns a task elsewhere after kill -9 of its worker, and closes it once", async () => {
    await fresh();
    await startHub();
    const a = await addWorker("a");
    const t = await hub.admin.createTask({ method: "sleep", args: { seconds: 3 } });
    const running = await untilState(t.id, ["open"]);
    expect(running.hostId).not.toBeNull();
    a.child.kill("SIGKILL");
    await a.exited;
    await addWorker("b");
    const done = await untilState(t.id, ["closed", "failed"], 40_000);
    expect(done.state, JSON.stringify(done)).toBe("closed");
    expect(done.attempts, JSON.stringify(done)).toBe(2);
    expect(done.infraFailures).toBe(1);
    expect((await hub.admin.getTask(t.id)).host).toBe("b");
  });

  it("fences a worker frozen past its lease: its late calls get 409 and nothing it sends is kept", async () => {
    await fresh();
    await startHub();
    const a = await addWorker("frozen", 1);
    const t = await hub.admin.createTask({ method: "sleep", args: { seconds: 4 } });
    await untilState(t.id, ["open"]);
    await waitFor("some log", async () => (await hub.admin.taskLog(t.id)).length > 0);
    a.child.kill("SIGSTOP");
    // Lease: 3 missed beats of 1 s. Then another worker takes the task over.
    await waitFor("the lease to expire", async () => {
      const x = await task(t.id);
      return x.state === "free" || x.leaseEpoch > 1;
    });
    await addWorker("healthy", 1);
    const done = await untilState(t.id, ["closed"], 40_000);
    expect(done.leaseEpoch).toBe(2);
    const epochOneBefore = await hub.admin.taskLog(t.id, 1);
    a.child.kill("SIGCONT");
    // The thawed worker heartbeats, hears "stale", kills its job and reports nothing.
    await new Promise((r) => setTimeout(r, 4000));
    expect(await hub.admin.taskLog(t.id, 1)).toBe(epochOneBefore);
    const after = await task(t.id);
    expect([after.state, after.leaseEpoch, after.hostId]).toEqual(["closed", 2, done.hostId]);
    expect(processesOfTask(t.id, workRoots)).toEqual([]);
  });

  it("loses nothing when the hub is killed with tasks in every state; workers reconnect", async () => {
    await fresh();
    await startHub();
    await addWorker("w1", 3);
    await addWorker("w2", 3);
    const closed = await hub.admin.createTask({ method: "sleep", args: { seconds: 0 } });
    const failed = await hub.admin.createTask({ method: "sleep", args: { seconds: 0, fail: true } });
    await untilState(closed.id, ["closed"]);
    await untilState(failed.id, ["failed"]);
    const canceled = await hub.admin.createTask({ method: "sleep", args: { seconds: 0 }, arch: "s390x" });
    await hub.admin.cancelTask(canceled.id);
    const running = [];
    for (let i = 0; i < 3; i++)
      running.push(await hub.admin.createTask({ method: "sleep", args: { seconds: 4 } }));
    const queued = await hub.admin.createTask({ method: "sleep", args: { seconds: 0 }, arch: "s390x" });
    for (const r of running) await untilState(r.id, ["open"]);
    const before = (await hub.admin.listTasks({ limit: 100 })).tasks;

    hub.child.kill("SIGKILL");
    await hub.exited;
    await new Promise((r) => setTimeout(r, 1500));
    await startHub();

    for (const r of running) {
      const t = await untilState(r.id, ["closed", "failed"], 40_000);
      expect(t.state).toBe("closed");
      // Its worker kept running through the outage and its lease survived the restart.
      expect(t.attempts).toBe(1);
    }
    const after = (await hub.admin.listTasks({ limit: 100 })).tasks;
    expect(after.map((t) => t.id).sort()).toEqual(before.map((t) => t.id).sort());
    const state = (id: number) => after.find((t) => t.id === id)?.state;
    expect([state(closed.id), state(failed.id), state(canceled.id), state(queued.id)]).toEqual([
      "closed",
      "failed",
      "canceled",
      "free",
    ]);
    // Both workers are back without being restarted.
    await waitFor(
      "workers online",
      async () => (await hub.admin.listHosts()).filter((h) => h.ready && h.name.startsWith("w")).length === 2,
    );
    const more = await hub.admin.createTask({ method: "sleep", args: { seconds: 0 } });
    expect((await untilState(more.id, ["closed"])).state).toBe("closed");
  });

  it("cancels a queued, a running and a finished task, and a parent's subtasks; the job's processes die", async () => {
    await fresh();
    await startHub();
    await addWorker("c", 4);
    const queued = await hub.admin.createTask({ method: "sleep", args: { seconds: 1 }, arch: "s390x" });
    expect((await hub.admin.cancelTask(queued.id)).task.state).toBe("canceled");

    const running = await hub.admin.createTask({ method: "sleep", args: { seconds: 60 } });
    await untilState(running.id, ["open"]);
    await waitFor("the job's processes", () => processesOfTask(running.id, workRoots).length > 0);
    expect((await hub.admin.cancelTask(running.id)).task.state).toBe("canceled");
    await waitFor(
      "the job's processes to die",
      () => processesOfTask(running.id, workRoots).length === 0,
      15_000,
    );

    const finished = await hub.admin.createTask({ method: "sleep", args: { seconds: 0 } });
    await untilState(finished.id, ["closed"]);
    const res = await hub.admin.cancelTask(finished.id);
    expect([res.task.state, res.canceled]).toEqual(["closed", []]);

    const parent = await hub.admin.createTask({
      method: "group",
      args: { tasks: [1, 2, 3].map(() => ({ method: "sleep", args: { seconds: 60 } })) },
    });
    const detail = await waitFor("three subtasks", async () => {
      const d = await hub.admin.getTask(parent.id);
      return d.subtasks.length === 3 ? d : undefined;
    });
    for (const id of detail.subtasks) await untilState(id, ["open"]);
    const cancel = await hub.admin.cancelTask(parent.id);
    expect(cancel.canceled.sort()).toEqual([parent.id, ...detail.subtasks].sort());
    for (const id of detail.subtasks) {
      expect((await task(id)).state).toBe("canceled");
      await waitFor(
        `subtask ${id}'s processes to die`,
        () => processesOfTask(id, workRoots).length === 0,
        15_000,
      );
    }
  });

  it("runs a group: the parent waits without capacity and closes when all subtasks close", async () => {
    await fresh();
    await startHub();
    await addWorker("g", 2);
    const parent = await hub.admin.createTask({
      method: "group",
      args: { tasks: [0, 1, 2, 3].map(() => ({ method: "sleep", args: { seconds: 0.5 } })) },
    });
    const done = await untilState(parent.id, ["closed", "failed"], 30_000);
    expect(done.state).toBe("closed");
    expect((done.result as { subtasks: unknown[] }).subtasks).toHaveLength(4);
  });
});

describe.runIf(pgOk)("two hub processes on one PostgreSQL database", () => {
  it("never hands a task out twice, and a task created on one hub wakes workers on the other", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-2hub-"));
    const pg = await createPgDatabase();
    const procs: Proc[] = [];
    try {
      // The sweeper ticks rarely here, so only LISTEN/NOTIFY can wake a waiting claim quickly.
      const engine = { sweep_interval: 20, claim_wait_max: 25 };
      const [p1, p2] = [await freePort(), await freePort()];
      const h1 = await startHubProcess({
        dataDir: path.join(dir, "h1"),
        port: p1,
        db: pg.url,
        worker: false,
        engine,
      });
      procs.push(h1);
      // The second hub shares the database; its admin token file is written from the same users table.
      const h2 = await startHubProcess({
        dataDir: path.join(dir, "h2"),
        port: p2,
        db: pg.url,
        worker: false,
        engine,
      });
      procs.push(h2);
      const hubs = [h1, h2];
      for (let i = 0; i < 8; i++) {
        const hub = hubs[i % 2]!;
        const { token } = await h1.admin.addHost({ name: `w${i}`, arches: ["amd64"], capacity: 4 });
        procs.push(startWorkerProcess(hub.url, token, path.join(dir, `w${i}`)));
      }
      await waitFor(
        "8 workers",
        async () =>
          (await h1.admin.listHosts()).filter((h) => h.ready && h.name.startsWith("w")).length === 8,
      );

      // A task created through hub 1 for a channel only a worker on hub 2 has.
      const { token: lone } = await h1.admin.addHost({
        name: "lonely",
        arches: ["amd64"],
        channels: ["lonely"],
        capacity: 1,
      });
      procs.push(startWorkerProcess(h2.url, lone, path.join(dir, "lonely")));
      await waitFor("lonely online", async () => (await h1.admin.getHost("lonely")).ready);
      await new Promise((r) => setTimeout(r, 1000)); // let it settle into a long poll
      const created = Date.now();
      const wake = await h1.admin.createTask({ method: "sleep", args: { seconds: 0 }, channel: "lonely" });
      const woke = await waitFor("the lonely task to close", async () => {
        const t = await h1.admin.getTask(wake.id);
        return t.state === "closed" ? t : undefined;
      });
      // Without NOTIFY the claim would sit until its long poll ended (25 s) or the sweeper ticked (20 s).
      expect(Date.parse(woke.startedAt!) - created).toBeLessThan(10_000);

      const ids: number[] = [];
      await Promise.all(
        hubs.map(async (hub) => {
          for (let i = 0; i < 500; i += 25) {
            const batch = await Promise.all(
              Array.from({ length: 25 }, () =>
                hub.admin.createTask({ method: "sleep", args: { seconds: 0 } }),
              ),
            );
            ids.push(...batch.map((t) => t.id));
          }
        }),
      );
      await waitFor(
        "1000 tasks closed",
        async () => (await h1.admin.listTasks({ state: "free,assigned,open", limit: 1 })).tasks.length === 0,
        120_000,
        250,
      );
      const all: TaskJson[] = [];
      for (let before: number | null | undefined; before !== null;) {
        const page = await h1.admin.listTasks({ limit: 1000, ...(before ? { before } : {}) });
        all.push(...page.tasks);
        before = page.next;
      }
      const mine = all.filter((t) => ids.includes(t.id));
      expect(mine).toHaveLength(1000);
      expect(mine.every((t) => t.state === "closed" && t.attempts === 1 && t.leaseEpoch === 1)).toBe(true);
      const hostsUsed = new Set(mine.map((t) => t.hostId));
      expect(hostsUsed.size).toBeGreaterThan(4);
    } finally {
      await Promise.all(procs.map((p) => stop(p, "SIGKILL")));
      await pg.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
