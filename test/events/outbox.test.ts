import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withWriteTx } from "../../src/db/database.js";
import { insertHost, updateHost } from "../../src/db/hosts.js";
import { readEvents, recordEvent } from "../../src/events/outbox.js";
import { cancelTask } from "../../src/tasks/cancel-task.js";
import { claimTask } from "../../src/tasks/claim-task.js";
import { createTask } from "../../src/tasks/create-task.js";
import type { EngineDeps } from "../../src/tasks/deps.js";
import { completeTask, failTask, startTask } from "../../src/tasks/finish-task.js";
import { heartbeat } from "../../src/tasks/heartbeat.js";
import { sweep } from "../../src/tasks/sweep.js";
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

describe.each(dialects)("event outbox on %s", (dialect) => {
  let t: TestDb;
  let clock: ManualClock;
  let deps: EngineDeps;

  beforeAll(async () => {
    t = await createTestDb(dialect);
    clock = new ManualClock();
    deps = engineDeps(t.db, clock, { heartbeatInterval: 1, missedHeartbeats: 3 });
  });
  afterAll(async () => {
    await deps.wake.close();
    await t.cleanup();
  });

  async function eventsOf(taskId: number): Promise<string[]> {
    const rows = await readEvents(t.db, { since: 0, limit: 1000, types: ["task.*"] });
    return rows
      .filter((r) => (JSON.parse(r.data) as { taskId: number }).taskId === taskId)
      .map((r) => r.type);
  }

  it("records every task state change with the change", async () => {
    const h = await insertHost(t.db.kysely, "outbox-host", { arches: ["amd64"], capacity: 10 }, clock.now());
    const a = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    expect(await eventsOf(a.id)).toEqual([]);
    const claimed = await claimTask(deps, h);
    expect(claimed?.id).toBe(a.id);
    const ref = { id: a.id, epoch: claimed!.lease_epoch, hostId: h.id };
    await startTask(deps, ref);
    await startTask(deps, ref); // a replay records nothing more
    await completeTask(deps, ref, { ok: true });
    expect(await eventsOf(a.id)).toEqual(["task.started", "task.closed"]);

    const b = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    const cb = await claimTask(deps, h);
    await failTask(
      deps,
      { id: b.id, epoch: cb!.lease_epoch, hostId: h.id },
      { code: "EXIT", message: "exit 2" },
    );
    expect(await eventsOf(b.id)).toEqual(["task.failed"]);
    const failed = (await readEvents(t.db, { since: 0, limit: 1000, types: ["task.failed"] })).at(-1)!;
    expect(JSON.parse(failed.data)).toMatchObject({ taskId: b.id, method: "sleep", error: { code: "EXIT" } });

    const c = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "bob" });
    await cancelTask(deps, c.id, "bob");
    expect(await eventsOf(c.id)).toEqual(["task.canceled"]);
  });

  it("records nothing when the change rolls back", async () => {
    const before = await readEvents(t.db, { since: 0, limit: 1000 });
    await expect(
      withWriteTx(t.db, async (trx) => {
        await recordEvent(trx, "tag.created", { tag: "ghost" }, null, clock.now());
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(await readEvents(t.db, { since: 0, limit: 1000 })).toEqual(before);
  });

  it("records hosts going online, offline, disabled and enabled", async () => {
    const h = await insertHost(t.db.kysely, "flappy", { arches: ["amd64"] }, clock.now());
    const since = (await readEvents(t.db, { since: 0, limit: 1000, newest: true })).at(-1)?.id ?? 0;
    await heartbeat(deps, h.id, []);
    await heartbeat(deps, h.id, []); // already online: no second event
    clock.advance(10);
    await sweep(deps);
    await updateHost(t.db.kysely, "flappy", { enabled: false }, clock.now());
    await updateHost(t.db.kysely, "flappy", { enabled: false }, clock.now());
    await updateHost(t.db.kysely, "flappy", { enabled: true }, clock.now());
    const rows = await readEvents(t.db, { since, limit: 1000, types: ["host.*"] });
    const mine = rows
      .filter((r) => (JSON.parse(r.data) as { host: string }).host === "flappy")
      .map((r) => r.type);
    expect(mine).toEqual(["host.online", "host.offline", "host.disabled", "host.enabled"]);
  });

  it("lists by type pattern, oldest first, and the newest page", async () => {
    await withWriteTx(t.db, async (trx) => {
      for (const tag of ["t1", "t2", "t3"])
        await recordEvent(trx, "tag.created", { tag }, "alice", clock.now());
      await recordEvent(trx, "tag_x.created", { tag: "not a family member" }, null, clock.now());
    });
    const tags = await readEvents(t.db, { since: 0, types: ["tag.*"] });
    expect(tags.map((r) => (JSON.parse(r.data) as { tag: string }).tag)).toEqual(["t1", "t2", "t3"]);
    const ids = tags.map((r) => r.id);
    expect([...ids].sort((x, y) => x - y)).toEqual(ids);
    const newest = await readEvents(t.db, { limit: 2, newest: true, types: ["tag.created"] });
    expect(newest.map((r) => (JSON.parse(r.data) as { tag: string }).tag)).toEqual(["t2", "t3"]);
    expect(await readEvents(t.db, { since: ids[2]!, types: ["tag.*"] })).toEqual([]);
  });
});

/** Runs `fn` in a write transaction that stays open until `release` is called. */
function openTx(
  db: TestDb["db"],
  fn: (trx: Parameters<Parameters<typeof withWriteTx>[1]>[0]) => Promise<void>,
): { ready: Promise<void>; release(): void; done: Promise<void> } {
  let release!: () => void;
  let ready!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const readyP = new Promise<void>((r) => (ready = r));
  const done = withWriteTx(db, async (trx) => {
    await fn(trx);
    ready();
    await gate;
  });
  return { ready: readyP, release, done };
}

describe.skipIf(!pgOk)("event order on postgres", () => {
  let t: TestDb;
  let other: TestDb;
  const now = 1_700_000_000_000;

  beforeAll(async () => {
    t = await createTestDb("postgres");
    other = await createTestDb("postgres");
  });
  afterAll(async () => {
    await t.cleanup();
    await other.cleanup();
  });

  const record = (trx: Parameters<Parameters<typeof withWriteTx>[1]>[0], tag: string) =>
    recordEvent(trx, "tag.created", { tag }, null, now).then(() => undefined);
  const tagsRead = async (since = 0) =>
    (await readEvents(t.db, { since, limit: 1000 })).map((r) => (JSON.parse(r.data) as { tag: string }).tag);

  it("holds back an event whose smaller id is still uncommitted, however the transactions began", async () => {
    const since = (await readEvents(t.db, { newest: true, limit: 1 })).at(-1)?.id ?? 0;
    // `late` has written (and holds its transaction id) before `early` draws the smaller event id.
    let drawLate!: () => void;
    const lateMayDraw = new Promise<void>((r) => (drawLate = r));
    const late = openTx(t.db, async (trx) => {
      await insertHost(trx, "order-host", { arches: ["amd64"] }, now);
      await lateMayDraw;
      await record(trx, "late");
    });
    await new Promise((r) => setTimeout(r, 50));
    const early = openTx(t.db, (trx) => record(trx, "early"));
    await early.ready;
    drawLate();
    late.release();
    await late.done;
    // "late" is committed, but "early" may still commit with a smaller id: a reader sees neither.
    expect(await tagsRead(since)).toEqual([]);
    early.release();
    await early.done;
    expect(await tagsRead(since)).toEqual(["early", "late"]);
  });

  it("takes one lock a transaction, however many events it writes, and again in the next", async () => {
    const lockCount = async (trx: Parameters<Parameters<typeof withWriteTx>[1]>[0]) => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*) AS n FROM pg_locks
         WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid()`.execute(trx);
      return Number(rows[0]?.n);
    };
    const since = (await readEvents(t.db, { newest: true, limit: 1 })).at(-1)?.id ?? 0;
    // Two transactions one after the other on one connection: the second must lock again.
    await t.db.kysely.connection().execute(async (conn) => {
      await conn.transaction().execute(async (trx) => {
        expect(await lockCount(trx)).toBe(0);
        for (let i = 0; i < 500; i++) await record(trx, `bulk-${i}`);
        expect(await lockCount(trx)).toBe(1);
      });
      await conn.transaction().execute(async (trx) => {
        expect(await lockCount(trx)).toBe(0);
        await record(trx, "next transaction");
        expect(await lockCount(trx)).toBe(1);
      });
    });
    const read = await readEvents(t.db, { since, limit: 1000 });
    expect(read).toHaveLength(501);
    expect((JSON.parse(read.at(-1)!.data) as { tag: string }).tag).toBe("next transaction");
  });

  it("is not held back by transactions in other databases or by ones that write no events", async () => {
    const since = (await readEvents(t.db, { newest: true, limit: 1 })).at(-1)?.id ?? 0;
    const elsewhere = openTx(other.db, (trx) => record(trx, "in another database"));
    const noEvents = openTx(t.db, (trx) =>
      insertHost(trx, "quiet-host", { arches: ["amd64"] }, now).then(() => undefined),
    );
    await Promise.all([elsewhere.ready, noEvents.ready]);
    await withWriteTx(t.db, (trx) => record(trx, "visible"));
    expect(await tagsRead(since)).toEqual(["visible"]);
    elsewhere.release();
    noEvents.release();
    await Promise.all([elsewhere.done, noEvents.done]);
  });
});
