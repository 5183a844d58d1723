import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { insertHost } from "../../src/db/hosts.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { cancelTask } from "../../src/tasks/cancel-task.js";
import { claimTask, type HostRow } from "../../src/tasks/claim-task.js";
import { createTask, type CreateTaskInput } from "../../src/tasks/create-task.js";
import type { EngineDeps } from "../../src/tasks/deps.js";
import { explainWaiting } from "../../src/tasks/diagnose.js";
import { completeTask, failTask, releaseTask, startTask } from "../../src/tasks/finish-task.js";
import { heartbeat, resetHostTasks } from "../../src/tasks/heartbeat.js";
import { retryTask } from "../../src/tasks/retry-task.js";
import { createSubtasks, waitForSubtasks } from "../../src/tasks/subtasks.js";
import { sweep } from "../../src/tasks/sweep.js";
import { getTask } from "../../src/tasks/task-queries.js";
import { appendLog, readLog } from "../../src/tasks/task-logs.js";
import {
  createTestDb,
  DIALECTS,
  engineDeps,
  ManualClock,
  postgresAvailable,
  type TestDb,
} from "../helpers/db.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof KilnError && e.code === code);
}

describe.each(dialects)("task engine on %s", (dialect) => {
  let t: TestDb;
  let clock: ManualClock;
  let deps: EngineDeps;
  let hostSeq = 0;

  beforeAll(async () => {
    t = await createTestDb(dialect);
  });
  afterAll(async () => {
    await deps.wake.close();
    await t.cleanup();
  });
  beforeEach(async () => {
    // Each test starts from an empty queue (hosts get unique names).
    await t.db.kysely.deleteFrom("task_logs").execute();
    await t.db.kysely.deleteFrom("task_locks").execute();
    await t.db.kysely.updateTable("tasks").set({ parent_id: null }).execute();
    await t.db.kysely.deleteFrom("tasks").execute();
    await t.db.kysely.deleteFrom("hosts").execute();
    clock = new ManualClock();
    deps = engineDeps(t.db, clock, { backoffBase: 5, backoffMax: 60 });
  });

  const host = (opts: { arches?: string[]; channels?: string[]; capacity?: number } = {}): Promise<HostRow> =>
    insertHost(
      t.db.kysely,
      `host-${++hostSeq}`,
      {
        arches: opts.arches ?? ["amd64"],
        channels: opts.channels ?? ["default"],
        capacity: opts.capacity ?? 10,
      },
      clock.now(),
    );
  const sleepTask = (extra: Partial<CreateTaskInput> = {}) =>
    createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice", ...extra });

  it("hands out higher priority first, then oldest first", async () => {
    const h = await host();
    const low = await sleepTask({ priority: 10 });
    const high = await sleepTask({ priority: 50 });
    const mid1 = await sleepTask({ priority: 20 });
    const mid2 = await sleepTask({ priority: 20 });
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await claimTask(deps, h))?.id);
    expect(order).toEqual([high.id, mid1.id, mid2.id, low.id]);
    expect(await claimTask(deps, h)).toBeUndefined();
  });

  it("interleaves owners so one owner's mass submission cannot starve another", async () => {
    const h = await host({ capacity: 100 });
    const mass = [];
    for (let i = 0; i < 20; i++) mass.push(await sleepTask({ owner: "mass" }));
    const first = await claimTask(deps, h);
    expect(first?.id).toBe(mass[0]!.id);
    const bob = await sleepTask({ owner: "bob" });
    const next = [(await claimTask(deps, h))?.id, (await claimTask(deps, h))?.id];
    // Bob's single task runs within the next round, not after the 19 remaining.
    expect(next).toContain(bob.id);
    // And the mass owner's tasks keep their own order.
    const rest = [];
    for (let r = await claimTask(deps, h); r; r = await claimTask(deps, h)) rest.push(r.id);
    const massIds = mass.map((m) => m.id).filter((id) => !next.includes(id) && id !== first?.id);
    expect(rest).toEqual(massIds);
  });

  it("puts the urgent tier ahead of everything", async () => {
    const h = await host();
    await sleepTask({ priority: 80 });
    const urgent = await sleepTask({ priority: 90 });
    expect((await claimTask(deps, h))?.id).toBe(urgent.id);
  });

  it("matches arch, channel and weight against the host's free capacity", async () => {
    const amd = await host({ arches: ["amd64"], channels: ["default"], capacity: 2 });
    const arm = await host({ arches: ["arm64"], channels: ["default", "bigmem"], capacity: 4 });
    const armTask = await sleepTask({ arch: "arm64" });
    const bigmem = await sleepTask({ channel: "bigmem" });
    const heavy = await sleepTask({ weight: 3 });
    const any = await sleepTask();
    expect((await claimTask(deps, amd))?.id).toBe(any.id);
    expect(await claimTask(deps, amd)).toBeUndefined();
    const armGot = [(await claimTask(deps, arm))?.id];
    // arm has capacity 4: armTask (1) + bigmem (1) fit, heavy (3) no longer does.
    armGot.push((await claimTask(deps, arm))?.id);
    expect(armGot.sort()).toEqual([armTask.id, bigmem.id].sort());
    expect(await claimTask(deps, arm)).toBeUndefined();
    expect((await getTask(deps, heavy.id)).state).toBe("free");
  });

  it("explains why a task cannot run", async () => {
    await host({ arches: ["amd64"], capacity: 2 });
    const noArch = await sleepTask({ arch: "riscv64" });
    expect(await explainWaiting(deps, noArch)).toMatch(/no host has arch riscv64/);
    const tooHeavy = await sleepTask({ weight: 50, arch: "amd64" });
    expect(await explainWaiting(deps, tooHeavy)).toMatch(/weight 50 is above every matching host's capacity/);
  });

  it("holds no capacity while a task is free, and frees it when the task finishes", async () => {
    const h = await host({ capacity: 1 });
    const a = await sleepTask();
    const b = await sleepTask();
    const got = await claimTask(deps, h);
    expect(got?.id).toBe(a.id);
    expect(await claimTask(deps, h)).toBeUndefined();
    await completeTask(deps, { id: a.id, epoch: got!.lease_epoch, hostId: h.id }, { ok: 1 });
    expect((await claimTask(deps, h))?.id).toBe(b.id);
  });

  it("fences every worker call by lease epoch; a replay with the current epoch is idempotent", async () => {
    const h1 = await host();
    const h2 = await host();
    const task = await sleepTask();
    const first = await claimTask(deps, h1);
    expect(first?.lease_epoch).toBe(1);
    await startTask(deps, { id: task.id, epoch: 1, hostId: h1.id });
    await startTask(deps, { id: task.id, epoch: 1, hostId: h1.id }); // replay
    // The lease runs out; the task goes to another host with epoch 2.
    clock.advance(deps.engine.heartbeatInterval * deps.engine.missedHeartbeats + 1);
    const swept = await sweep(deps);
    expect(swept.expired).toEqual([task.id]);
    const requeued = await getTask(deps, task.id);
    expect(requeued.state).toBe("free");
    expect(requeued.infra_failures).toBe(1);
    clock.advance(120);
    const second = await claimTask(deps, h2);
    expect(second?.lease_epoch).toBe(2);
    await expectCode(completeTask(deps, { id: task.id, epoch: 1, hostId: h1.id }, "late"), "LEASE_STALE");
    await expectCode(
      appendLog(deps, { id: task.id, epoch: 1, hostId: h1.id }, { offset: 0, data: "late\n" }),
      "LEASE_STALE",
    );
    await expectCode(completeTask(deps, { id: task.id, epoch: 2, hostId: h1.id }, "x"), "HOST_MISMATCH");
    const done = await completeTask(deps, { id: task.id, epoch: 2, hostId: h2.id }, "good");
    const replay = await completeTask(deps, { id: task.id, epoch: 2, hostId: h2.id }, "good");
    expect(replay.state).toBe("closed");
    expect(done.result).toBe(JSON.stringify("good"));
    expect((await getTask(deps, task.id)).result).toBe(JSON.stringify("good"));
    await expectCode(
      failTask(deps, { id: task.id, epoch: 2, hostId: h2.id }, { code: "X", message: "x" }),
      "TASK_FINISHED",
    );
  });

  it("fails a task as poison after it lost its host three times", async () => {
    const h = await host();
    const task = await sleepTask();
    for (let i = 1; i <= 3; i++) {
      const got = await claimTask(deps, h);
      expect(got?.id).toBe(task.id);
      clock.advance(deps.engine.heartbeatInterval * deps.engine.missedHeartbeats + 1);
      await sweep(deps);
      clock.advance(deps.engine.backoffMax + 1);
    }
    const row = await getTask(deps, task.id);
    expect(row.state).toBe("failed");
    expect(JSON.parse(row.error!)).toMatchObject({ code: "HOST_LOST" });
  });

  it("backs off before rerunning an infra failure", async () => {
    const h = await host();
    const task = await sleepTask();
    const got = await claimTask(deps, h);
    const requeued = await failTask(
      deps,
      { id: task.id, epoch: got!.lease_epoch, hostId: h.id },
      {
        code: "WORKER_LOST",
        message: "boom",
        infra: true,
      },
    );
    expect(requeued.state).toBe("free");
    expect(requeued.run_at).toBeGreaterThanOrEqual(clock.now());
    expect(requeued.run_at).toBeLessThanOrEqual(clock.now() + 5000);
    clock.advance(6);
    expect((await claimTask(deps, h))?.id).toBe(task.id);
  });

  it("keeps a lease alive with heartbeats and reports canceled tasks", async () => {
    const h = await host();
    const a = await sleepTask();
    const b = await sleepTask();
    const ca = await claimTask(deps, h);
    const cb = await claimTask(deps, h);
    for (let i = 0; i < 5; i++) {
      clock.advance(deps.engine.heartbeatInterval);
      const beat = await heartbeat(deps, h.id, [
        { id: a.id, epoch: ca!.lease_epoch },
        { id: b.id, epoch: cb!.lease_epoch },
      ]);
      expect(beat.every((x) => x.status === "ok")).toBe(true);
      expect((await sweep(deps)).expired).toEqual([]);
    }
    await cancelTask(deps, b.id, "alice");
    const beat = await heartbeat(deps, h.id, [
      { id: a.id, epoch: ca!.lease_epoch },
      { id: b.id, epoch: cb!.lease_epoch },
      { id: a.id, epoch: 99 },
    ]);
    expect(beat.map((x) => x.status)).toEqual(["ok", "canceled", "stale"]);
  });

  it("times out a task past its timeout and tells the worker", async () => {
    const h = await host();
    const task = await sleepTask({ timeout: 60 });
    const got = await claimTask(deps, h);
    clock.advance(30);
    await heartbeat(deps, h.id, [{ id: task.id, epoch: got!.lease_epoch }]);
    clock.advance(31);
    await heartbeat(deps, h.id, [{ id: task.id, epoch: got!.lease_epoch }]);
    const swept = await sweep(deps);
    expect(swept.timedOut).toEqual([task.id]);
    const row = await getTask(deps, task.id);
    expect(row.state).toBe("failed");
    expect(JSON.parse(row.error!)).toMatchObject({ code: "TASK_TIMEOUT" });
    const beat = await heartbeat(deps, h.id, [{ id: task.id, epoch: got!.lease_epoch }]);
    expect(beat[0]?.status).toBe("timeout");
  });

  it("cancels queued, running and finished tasks correctly, and a parent's subtasks", async () => {
    const h = await host();
    const queued = await sleepTask({ arch: "s390x" });
    const running = await sleepTask();
    const finished = await sleepTask();
    const claimedRunning = await claimTask(deps, h);
    const claimedFinished = await claimTask(deps, h);
    expect(claimedRunning?.id).toBe(running.id);
    await completeTask(deps, { id: finished.id, epoch: claimedFinished!.lease_epoch, hostId: h.id }, null);

    expect((await cancelTask(deps, queued.id, "alice")).task.state).toBe("canceled");
    expect((await cancelTask(deps, running.id, "alice")).task.state).toBe("canceled");
    const fin = await cancelTask(deps, finished.id, "alice");
    expect(fin.task.state).toBe("closed");
    expect(fin.canceled).toEqual([]);
    await expectCode(
      completeTask(deps, { id: running.id, epoch: claimedRunning!.lease_epoch, hostId: h.id }, 1),
      "TASK_CANCELED",
    );

    const hub = await host({ arches: ["amd64"], channels: ["hub"] });
    const parent = await createTask(deps, {
      method: "group",
      owner: "alice",
      args: { tasks: [{ method: "sleep", args: { seconds: 1 } }] },
    });
    const p = await claimTask(deps, hub);
    const ref = { id: parent.id, epoch: p!.lease_epoch, hostId: hub.id };
    const subs = await createSubtasks(deps, ref, [
      { label: "a", method: "sleep", args: { seconds: 1 } },
      { label: "b", method: "sleep", args: { seconds: 1 } },
    ]);
    await claimTask(deps, h);
    const res = await cancelTask(deps, parent.id, "alice");
    expect(res.canceled.sort()).toEqual([parent.id, ...subs.map((s) => s.id)].sort());
    for (const s of subs) expect((await getTask(deps, s.id)).state).toBe("canceled");
  });

  it("creates subtasks idempotently, suspends the parent without capacity and wakes it", async () => {
    const hub = await host({ channels: ["hub"], capacity: 1 });
    const w = await host({ capacity: 10 });
    const parent = await createTask(deps, {
      method: "group",
      owner: "alice",
      priority: 40,
      args: { tasks: [{ method: "sleep", args: { seconds: 1 } }] },
    });
    const p = await claimTask(deps, hub);
    const ref = { id: parent.id, epoch: p!.lease_epoch, hostId: hub.id };
    const specs = [
      { label: "x", method: "sleep", args: { seconds: 0 } },
      { label: "y", method: "sleep", args: { seconds: 0 } },
    ];
    const first = await createSubtasks(deps, ref, specs);
    const again = await createSubtasks(deps, ref, specs);
    expect(again.map((s) => s.id)).toEqual(first.map((s) => s.id));
    expect(first.every((s) => s.priority === 40 && s.owner === "alice")).toBe(true);
    expect((await waitForSubtasks(deps, ref)).done).toBe(false);
    const waiting = await getTask(deps, parent.id);
    expect([waiting.state, waiting.waiting, waiting.host_id]).toEqual(["open", 1, null]);
    // The hub host's only capacity slot is free again while the parent waits.
    const other = await createTask(deps, {
      method: "group",
      owner: "bob",
      args: { tasks: [{ method: "sleep", args: { seconds: 0 } }] },
    });
    expect((await claimTask(deps, hub))?.id).toBe(other.id);

    const s1 = await claimTask(deps, w);
    const s2 = await claimTask(deps, w);
    await completeTask(deps, { id: s1!.id, epoch: s1!.lease_epoch, hostId: w.id }, 1);
    expect((await getTask(deps, parent.id)).state).toBe("open");
    await completeTask(deps, { id: s2!.id, epoch: s2!.lease_epoch, hostId: w.id }, 2);
    const woken = await getTask(deps, parent.id);
    expect([woken.state, woken.waiting]).toEqual(["free", 0]);
    // The hub host is busy with bob's task; a second slot lets the parent run again, epoch 2.
    await t.db.kysely.updateTable("hosts").set({ capacity: 2 }).where("id", "=", hub.id).execute();
    const resumed = await claimTask(deps, { ...hub, capacity: 2 });
    expect(resumed?.id).toBe(parent.id);
    expect(resumed?.lease_epoch).toBe(2);
    const ref2 = { id: parent.id, epoch: 2, hostId: hub.id };
    expect((await createSubtasks(deps, ref2, specs)).map((s) => s.id)).toEqual(first.map((s) => s.id));
    expect((await waitForSubtasks(deps, ref2)).done).toBe(true);
  });

  it("serializes conflicting resource locks in arrival order and runs shared ones together", async () => {
    const h = await host({ capacity: 10 });
    const ex1 = await sleepTask({ locks: [{ resource: "repo:main", exclusive: true }] });
    const sh1 = await sleepTask({ locks: [{ resource: "repo:main", exclusive: false }] });
    const sh2 = await sleepTask({ locks: [{ resource: "repo:main", exclusive: false }] });
    const ex2 = await sleepTask({ locks: [{ resource: "repo:main", exclusive: true }] });
    const unrelated = await sleepTask({ locks: [{ resource: "repo:other", exclusive: true }] });
    const c1 = await claimTask(deps, h);
    expect(c1?.id).toBe(ex1.id);
    // sh1, sh2 and ex2 wait behind ex1; unrelated work runs.
    expect((await claimTask(deps, h))?.id).toBe(unrelated.id);
    expect(await claimTask(deps, h)).toBeUndefined();
    expect(await explainWaiting(deps, await getTask(deps, sh1.id))).toMatch(
      /waiting for lock repo:main, queued earlier by task/,
    );
    await completeTask(deps, { id: ex1.id, epoch: c1!.lease_epoch, hostId: h.id }, null);
    const both = [await claimTask(deps, h), await claimTask(deps, h)];
    expect(both.map((b) => b?.id).sort()).toEqual([sh1.id, sh2.id].sort());
    expect(await claimTask(deps, h)).toBeUndefined();
    for (const b of both) await completeTask(deps, { id: b!.id, epoch: b!.lease_epoch, hostId: h.id }, null);
    expect((await claimTask(deps, h))?.id).toBe(ex2.id);
  });

  it("retries a failed task by hand, rerunning only subtasks that did not close", async () => {
    const h = await host();
    const task = await sleepTask({ locks: [{ resource: "r", exclusive: true }] });
    const got = await claimTask(deps, h);
    await failTask(
      deps,
      { id: task.id, epoch: got!.lease_epoch, hostId: h.id },
      { code: "TASK_FAILED", message: "no" },
    );
    await expectCode(retryTask(deps, (await sleepTask()).id), "TASK_NOT_RETRYABLE");
    const again = await retryTask(deps, task.id);
    expect([again.state, again.error]).toEqual(["free", null]);
    const locks = await t.db.kysely
      .selectFrom("task_locks")
      .selectAll()
      .where("task_id", "=", task.id)
      .execute();
    expect(locks.map((l) => l.resource)).toEqual(["r"]);
  });

  it("requeues what a restarted worker no longer runs", async () => {
    const h = await host();
    const a = await sleepTask();
    const b = await sleepTask();
    await claimTask(deps, h);
    await claimTask(deps, h);
    const requeued = await resetHostTasks(deps, h.id, [b.id]);
    expect(requeued).toEqual([a.id]);
    expect((await getTask(deps, b.id)).state).toBe("assigned");
  });

  it("keeps logs per attempt, accepts replays and refuses gaps", async () => {
    const h = await host();
    const task = await sleepTask();
    const got = await claimTask(deps, h);
    const ref = { id: task.id, epoch: got!.lease_epoch, hostId: h.id };
    expect(await appendLog(deps, ref, { offset: 0, data: "héllo\n" })).toEqual({ size: 7 });
    expect(await appendLog(deps, ref, { offset: 0, data: "héllo\n" })).toEqual({ size: 7 });
    await expectCode(appendLog(deps, ref, { offset: 99, data: "x" }), "LOG_GAP");
    await appendLog(deps, ref, { offset: 7, data: "world\n" });
    const chunks = await readLog(deps, task.id, ref.epoch);
    expect(chunks.map((c) => c.data).join("")).toBe("héllo\nworld\n");
    const small = engineDeps(t.db, clock, { logLimitBytes: 16 });
    await expectCode(appendLog(small, ref, { offset: 13, data: "x".repeat(10) }), "LOG_TOO_LARGE");
  });

  it("releases a task on worker shutdown without counting a failure", async () => {
    const h = await host();
    const task = await sleepTask();
    const got = await claimTask(deps, h);
    const freed = await releaseTask(deps, { id: task.id, epoch: got!.lease_epoch, hostId: h.id });
    expect([freed.state, freed.infra_failures, freed.host_id]).toEqual(["free", 0, null]);
    // A replay of the release is fine; a complete with that old lease is not.
    await releaseTask(deps, { id: task.id, epoch: got!.lease_epoch, hostId: h.id });
    await expectCode(
      completeTask(deps, { id: task.id, epoch: got!.lease_epoch, hostId: h.id }, 1),
      "LEASE_STALE",
    );
  });

  it("rejects bad input with stable codes and stores nothing", async () => {
    const before = await t.db.kysely
      .selectFrom("tasks")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirst();
    await expectCode(createTask(deps, { method: "nope", owner: "a" }), "UNKNOWN_METHOD");
    await expectCode(
      createTask(deps, { method: "sleep", args: { seconds: 1 }, owner: "a", priority: 101 }),
      "INVALID_PRIORITY",
    );
    await expectCode(
      createTask(deps, { method: "sleep", args: { seconds: 1 }, owner: "a", priority: 2.5 }),
      "INVALID_PRIORITY",
    );
    await expectCode(
      createTask(deps, { method: "sleep", args: { seconds: -1 }, owner: "a" }),
      "VALIDATION_FAILED",
    );
    await expectCode(
      createTask(deps, { method: "sleep", args: { seconds: 1 }, owner: "a", arch: "../x" }),
      "VALIDATION_FAILED",
    );
    await expectCode(
      createTask(deps, {
        method: "sleep",
        args: { seconds: 1 },
        owner: "a",
        locks: [{ resource: "", exclusive: true }],
      }),
      "INVALID_LOCK",
    );
    await expectCode(getTask(deps, 999999), "TASK_NOT_FOUND");
    const after = await t.db.kysely
      .selectFrom("tasks")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirst();
    expect(Number(after?.n)).toBe(Number(before?.n));
  });

  it("never hands one task out twice under concurrent claims (8 claimers, 1000 tasks)", async () => {
    const hosts = [];
    for (let i = 0; i < 8; i++) hosts.push(await host({ capacity: 1000 }));
    const inputs = Array.from({ length: 1000 }, () => ({
      method: "sleep",
      args: { seconds: 0 },
      owner: "load",
    }));
    const { createTasks } = await import("../../src/tasks/create-task.js");
    await createTasks(deps, inputs);
    const seen = new Map<number, number>();
    await Promise.all(
      hosts.map(async (h) => {
        for (;;) {
          const got = await claimTask(deps, h);
          if (!got) return;
          seen.set(got.id, (seen.get(got.id) ?? 0) + 1);
        }
      }),
    );
    expect(seen.size).toBe(1000);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
  });
});
