import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import "../../src/builds/methods.js";
import "../../src/builds/retry-policy.js";
import { insertHost } from "../../src/db/hosts.js";
import { claimTask, type HostRow } from "../../src/tasks/claim-task.js";
import { createTask } from "../../src/tasks/create-task.js";
import type { EngineDeps } from "../../src/tasks/deps.js";
import { completeTask, failTask, startTask } from "../../src/tasks/finish-task.js";
import { sweep } from "../../src/tasks/sweep.js";
import type { AttemptEnd } from "../../src/tasks/task-attempts.js";
import type { TaskError, TaskRow } from "../../src/tasks/types.js";
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

describe.each(dialects)("retry policies and quarantine on %s", (dialect) => {
  let t: TestDb;
  let clock: ManualClock;
  let deps: EngineDeps;
  let ended: AttemptEnd[];
  let seq = 0;

  beforeAll(async () => {
    t = await createTestDb(dialect);
  });
  afterAll(async () => {
    await deps.wake.close();
    await t.cleanup();
  });
  beforeEach(async () => {
    // Each test starts from an empty queue: what earlier tests left unfinished is canceled.
    await t.db.kysely
      .updateTable("tasks")
      .set({ state: "canceled" })
      .where("state", "in", ["free", "assigned", "open"])
      .execute();
    clock = new ManualClock();
    ended = [];
    deps = {
      ...engineDeps(t.db, clock, {
        backoffBase: 5,
        backoffMax: 60,
        quarantineFailures: 3,
        quarantineWindow: 600,
      }),
      observer: { attemptEnded: (e) => ended.push(e) },
    };
  });

  async function host(): Promise<HostRow> {
    return insertHost(t.db.kysely, `rel-host-${++seq}`, { arches: ["amd64"], capacity: 10 }, clock.now());
  }

  /** A build of a target with the given retry policy (null: the engine's default). */
  async function buildWithPolicy(policy: string | null): Promise<number> {
    const k = t.db.kysely;
    const n = ++seq;
    const tag = await k
      .insertInto("tags")
      .values({ name: `rel-tag-${n}`, arches: null, perm: null, locked: 0, extra: "{}", created_at: 0 })
      .returning("id")
      .executeTakeFirstOrThrow();
    const target = await k
      .insertInto("targets")
      .values({
        name: `rel-target-${n}`,
        build_tag_id: tag.id,
        dest_tag_id: tag.id,
        created_at: 0,
        retry_policy: policy,
      })
      .returning("id")
      .executeTakeFirstOrThrow();
    const build = await k
      .insertInto("builds")
      .values({
        source: `pkg${n}`,
        version: "1.0-1",
        state: "building",
        owner: "alice",
        target_id: target.id,
        scratch: 0,
        task_id: null,
        created_at: 0,
      })
      .returning("id")
      .executeTakeFirstOrThrow();
    return build.id;
  }

  const archTask = (buildId: number) =>
    createTask(deps, {
      method: "buildArch",
      args: { buildId, arch: "amd64" },
      owner: "alice",
      arch: "amd64",
    });

  /** Claims the task on the host (after its backoff) and fails the attempt with `error`. */
  async function failAttempt(h: HostRow, task: TaskRow, error: TaskError): Promise<TaskRow> {
    const fresh = await t.db.kysely
      .selectFrom("tasks")
      .selectAll()
      .where("id", "=", task.id)
      .executeTakeFirstOrThrow();
    if (fresh.run_at > clock.now()) clock.ms = fresh.run_at;
    const claimed = await claimTask(deps, h);
    expect(claimed?.id).toBe(task.id);
    const ref = { id: task.id, epoch: claimed!.lease_epoch, hostId: h.id };
    await startTask(deps, ref);
    clock.advance(30);
    return failTask(deps, ref, error);
  }

  const exit = (code: number): TaskError => ({
    code: "BUILD_FAILED",
    message: `exited with ${code}`,
    exitCode: code,
    signal: null,
  });

  it("retries a listed exit code with backoff, then succeeds, keeping every attempt", async () => {
    const h = await host();
    const task = await archTask(await buildWithPolicy("2 on exit:75"));
    const first = await failAttempt(h, task, exit(75));
    expect(first.state).toBe("free");
    expect(first.retries).toBe(1);
    expect(first.host_id).toBeNull();
    // Full jitter: somewhere in [now, now + base).
    expect(first.run_at).toBeGreaterThanOrEqual(clock.now());
    expect(first.run_at).toBeLessThan(clock.now() + 5000);
    const second = await failAttempt(h, task, exit(75));
    expect(second.state).toBe("free");
    expect(second.retries).toBe(2);

    if (second.run_at > clock.now()) clock.ms = second.run_at;
    const claimed = await claimTask(deps, h);
    const ref = { id: task.id, epoch: claimed!.lease_epoch, hostId: h.id };
    await startTask(deps, ref);
    const done = await completeTask(deps, ref, { ok: true });
    expect(done.state).toBe("closed");

    const attempts = await t.db.kysely
      .selectFrom("task_attempts")
      .selectAll()
      .where("task_id", "=", task.id)
      .orderBy("epoch")
      .execute();
    expect(attempts.map((a) => [a.epoch, a.outcome, a.exit_code, a.host_id])).toEqual([
      [1, "retried", 75, h.id],
      [2, "retried", 75, h.id],
      [3, "closed", null, h.id],
    ]);
    expect(ended.map((e) => e.outcome)).toEqual(["retried", "retried", "closed"]);
    expect(ended.every((e) => e.method === "buildArch" && e.runMs !== null)).toBe(true);
  });

  it("fails for good once the retries run out", async () => {
    const h = await host();
    const task = await archTask(await buildWithPolicy("1 on exit:75"));
    expect((await failAttempt(h, task, exit(75))).state).toBe("free");
    const last = await failAttempt(h, task, exit(75));
    expect(last.state).toBe("failed");
    expect(last.retries).toBe(1);
  });

  it("does not retry an exit code the policy does not list", async () => {
    const h = await host();
    const task = await archTask(await buildWithPolicy("3 on exit:75,signal:KILL"));
    const row = await failAttempt(h, task, exit(2));
    expect(row.state).toBe("failed");
    expect(row.retries).toBe(0);
    expect(ended.map((e) => e.outcome)).toEqual(["failed"]);
  });

  it("retries a listed signal", async () => {
    const h = await host();
    const task = await archTask(await buildWithPolicy("1 on signal:KILL"));
    const row = await failAttempt(h, task, {
      code: "BUILD_FAILED",
      message: "killed",
      exitCode: null,
      signal: "SIGKILL",
    });
    expect(row.state).toBe("free");
  });

  it("uses the engine's default when the target has no policy", async () => {
    const h = await host();
    deps.engine.retryDefault = "1 on exit:75";
    const task = await archTask(await buildWithPolicy(null));
    expect((await failAttempt(h, task, exit(75))).state).toBe("free");
    deps.engine.retryDefault = "none";
    const other = await archTask(await buildWithPolicy(null));
    expect((await failAttempt(h, other, exit(75))).state).toBe("failed");
  });

  it("retries infra failures whatever the policy says", async () => {
    const h = await host();
    const task = await archTask(await buildWithPolicy("none"));
    const row = await failAttempt(h, task, {
      code: "SANDBOX_UNAVAILABLE",
      message: "no sandbox",
      infra: true,
    });
    expect(row.state).toBe("free");
    expect(row.infra_failures).toBe(1);
    expect(row.retries).toBe(0);
    // A lost host too: the lease runs out and the sweeper requeues.
    const fresh = await t.db.kysely
      .selectFrom("tasks")
      .selectAll()
      .where("id", "=", task.id)
      .executeTakeFirstOrThrow();
    clock.ms = Math.max(clock.ms, fresh.run_at);
    expect((await claimTask(deps, h))?.id).toBe(task.id);
    clock.advance(3600);
    expect((await sweep(deps)).expired).toContain(task.id);
    const after = await t.db.kysely
      .selectFrom("tasks")
      .selectAll()
      .where("id", "=", task.id)
      .executeTakeFirstOrThrow();
    expect(after.state).toBe("free");
    expect(after.infra_failures).toBe(2);
  });

  it("quarantines a host after repeated infra failures, counting one instant once", async () => {
    const h = await host();
    const cancel = (id: number) =>
      t.db.kysely.updateTable("tasks").set({ state: "canceled" }).where("id", "=", id).execute();
    const fail = async () => {
      const task = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
      await failAttempt(h, task, { code: "SANDBOX_UNAVAILABLE", message: "no sandbox", infra: true });
      await cancel(task.id);
      clock.advance(10);
    };
    // One incident: the host goes silent holding two tasks; one sweep requeues both at once.
    const a = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    const b = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    expect((await claimTask(deps, h))?.id).toBe(a.id);
    expect((await claimTask(deps, h))?.id).toBe(b.id);
    clock.advance(3600);
    expect((await sweep(deps)).expired.sort()).toEqual([a.id, b.id].sort());
    await cancel(a.id);
    await cancel(b.id);
    clock.advance(10);
    await fail();
    let row = await t.db.kysely
      .selectFrom("hosts")
      .selectAll()
      .where("id", "=", h.id)
      .executeTakeFirstOrThrow();
    expect(row.enabled).toBe(1);
    await fail();
    row = await t.db.kysely.selectFrom("hosts").selectAll().where("id", "=", h.id).executeTakeFirstOrThrow();
    expect(row.enabled).toBe(0);
    expect(row.disabled_reason).toMatch(/^quarantined: 3 infra failures/);
    const events = await t.db.kysely
      .selectFrom("events")
      .selectAll()
      .where("type", "=", "host.quarantined")
      .execute();
    expect(events.filter((e) => (JSON.parse(e.data) as { hostId: number }).hostId === h.id)).toHaveLength(1);
    // Quarantined: no new work.
    await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    expect(await claimTask(deps, row)).toBeUndefined();
  });

  it("does not quarantine for failures spread wider than the window", async () => {
    const h = await host();
    for (let i = 0; i < 4; i++) {
      const task = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
      await failAttempt(h, task, { code: "SANDBOX_UNAVAILABLE", message: "no sandbox", infra: true });
      await t.db.kysely.updateTable("tasks").set({ state: "canceled" }).where("id", "=", task.id).execute();
      clock.advance(400);
    }
    const row = await t.db.kysely
      .selectFrom("hosts")
      .selectAll()
      .where("id", "=", h.id)
      .executeTakeFirstOrThrow();
    expect(row.enabled).toBe(1);
  });
});
