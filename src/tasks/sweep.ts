import { sql } from "kysely";
import { withWriteTx } from "../db/database.js";
import { recordEvent } from "../events/outbox.js";
import { collectTree, cancelIds } from "./cancel-task.js";
import { leaseMs, type EngineDeps } from "./deps.js";
import { afterFinal, requeueInfra } from "./finish-task.js";
import { recordAttempt } from "./task-attempts.js";
import { RUNNING_STATES, type TaskError } from "./types.js";

export interface SweepResult {
  expired: number[];
  timedOut: number[];
  offline: string[];
}

/**
 * The hub's periodic pass: leases that ran out go back to the queue (an infra failure), tasks
 * past their timeout fail, hosts silent for the missed-beat allowance go offline. Every change
 * is a guarded update, so several hubs sweeping at once do each thing once.
 */
export async function sweep(deps: EngineDeps): Promise<SweepResult> {
  const now = deps.clock.now();
  const result: SweepResult = { expired: [], timedOut: [], offline: [] };

  const expired = await deps.db.kysely
    .selectFrom("tasks")
    .selectAll()
    .where("state", "in", RUNNING_STATES)
    .where("waiting", "=", 0)
    .where("lease_expires_at", "<", now)
    .limit(500)
    .execute();
  for (const row of expired) {
    const done = await withWriteTx(deps.db, (trx) =>
      requeueInfra(deps, trx, row, { code: "HOST_LOST", message: "the task's lease expired", infra: true }),
    );
    if (done) result.expired.push(row.id);
  }

  const overdue = await deps.db.kysely
    .selectFrom("tasks")
    .selectAll()
    .where("state", "in", RUNNING_STATES)
    // A waiting parent's clock runs from its first start; a running task's from its claim.
    .where(
      sql<boolean>`(CASE WHEN waiting = 1 THEN started_at ELSE claimed_at END) + timeout_s * 1000 < ${now}`,
    )
    .limit(500)
    .execute();
  for (const row of overdue) {
    const error: TaskError = { code: "TASK_TIMEOUT", message: `timed out after ${row.timeout_s} s` };
    const done = await withWriteTx(deps.db, async (trx) => {
      const failed = await trx
        .updateTable("tasks")
        .set({
          state: "failed",
          waiting: 0,
          error: JSON.stringify(error),
          completed_at: now,
          updated_at: now,
        })
        .where("id", "=", row.id)
        .where("lease_epoch", "=", row.lease_epoch)
        .where("state", "in", RUNNING_STATES)
        .returningAll()
        .executeTakeFirst();
      if (!failed) return false;
      if (row.waiting === 0) await recordAttempt(deps, trx, row, "timeout", error);
      await afterFinal(deps, trx, failed);
      const tree = await collectTree(trx, row.id);
      await cancelIds(deps, trx, tree.slice(1), {
        code: "TASK_CANCELED",
        message: `parent task ${row.id} timed out`,
      });
      return true;
    });
    if (done) result.timedOut.push(row.id);
  }

  const offline = await withWriteTx(deps.db, async (trx) => {
    const hosts = await trx
      .updateTable("hosts")
      .set({ ready: 0 })
      .where("ready", "=", 1)
      .where("last_seen_at", "<", now - leaseMs(deps.engine))
      .returning(["id", "name"])
      .execute();
    for (const h of hosts) await recordEvent(trx, "host.offline", { host: h.name, hostId: h.id }, null, now);
    return hosts;
  });
  result.offline = offline.map((h) => h.name);

  if (result.expired.length + result.timedOut.length > 0) deps.wake.notify();
  return result;
}

/**
 * After a hub restart, live leases get one more period: workers kept running while the hub was
 * down and must have the chance to heartbeat before anything expires.
 */
export async function extendLeasesAfterRestart(deps: EngineDeps): Promise<void> {
  const until = deps.clock.now() + leaseMs(deps.engine);
  await deps.db.kysely
    .updateTable("tasks")
    .set({ lease_expires_at: until })
    .where("state", "in", RUNNING_STATES)
    .where("waiting", "=", 0)
    .where("lease_expires_at", "<", until)
    .execute();
  await deps.db.kysely
    .updateTable("hosts")
    .set({ last_seen_at: deps.clock.now() })
    .where("ready", "=", 1)
    .execute();
}
