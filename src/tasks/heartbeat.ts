import { withWriteTx } from "../db/database.js";
import { markHostSeen } from "../db/hosts.js";
import { leaseMs, type EngineDeps } from "./deps.js";
import { requeueInfra } from "./finish-task.js";
import { RUNNING_STATES } from "./types.js";

/** What the hub tells a worker about each task it says it is running. */
export type LeaseStatus = "ok" | "stale" | "canceled" | "timeout" | "finished";

export interface HeartbeatEntry {
  id: number;
  epoch: number;
}

/**
 * A host's heartbeat: marks it alive and extends the lease of every task it still holds. Tasks
 * it no longer holds (lease moved on, canceled, timed out) are reported so it kills them.
 */
export async function heartbeat(
  deps: EngineDeps,
  hostId: number,
  entries: HeartbeatEntry[],
): Promise<{ id: number; epoch: number; status: LeaseStatus }[]> {
  const now = deps.clock.now();
  const expires = now + leaseMs(deps.engine);
  return withWriteTx(deps.db, async (trx) => {
    await markHostSeen(trx, hostId, now);
    if (entries.length === 0) return [];
    const rows = await trx
      .selectFrom("tasks")
      .select(["id", "state", "lease_epoch", "host_id", "error"])
      .where(
        "id",
        "in",
        entries.map((e) => e.id),
      )
      .execute();
    const byId = new Map(rows.map((r) => [r.id, r]));
    const out: { id: number; epoch: number; status: LeaseStatus }[] = [];
    for (const entry of entries) {
      const row = byId.get(entry.id);
      let status: LeaseStatus;
      if (!row || row.lease_epoch !== entry.epoch || row.host_id !== hostId) status = "stale";
      else if (row.state === "canceled") status = "canceled";
      else if (row.state === "failed" && row.error?.includes('"TASK_TIMEOUT"')) status = "timeout";
      else if (!(RUNNING_STATES as readonly string[]).includes(row.state)) status = "finished";
      else {
        const updated = await trx
          .updateTable("tasks")
          .set({ lease_expires_at: expires })
          .where("id", "=", entry.id)
          .where("lease_epoch", "=", entry.epoch)
          .where("host_id", "=", hostId)
          .where("state", "in", RUNNING_STATES)
          .executeTakeFirst();
        status = updated.numUpdatedRows > 0n ? "ok" : "stale";
      }
      out.push({ id: entry.id, epoch: entry.epoch, status });
    }
    return out;
  });
}

/**
 * A worker (re)starting says which tasks it holds — none after a crash. Whatever the hub still
 * has on that host is dead: it goes back to the queue with an infra failure counted.
 */
export async function resetHostTasks(
  deps: EngineDeps,
  hostId: number,
  keep: number[] = [],
): Promise<number[]> {
  const requeued = await withWriteTx(deps.db, async (trx) => {
    let q = trx
      .selectFrom("tasks")
      .selectAll()
      .where("host_id", "=", hostId)
      .where("state", "in", RUNNING_STATES)
      .where("waiting", "=", 0);
    if (keep.length > 0) q = q.where("id", "not in", keep);
    const rows = await q.execute();
    const ids: number[] = [];
    for (const row of rows) {
      const done = await requeueInfra(deps, trx, row, {
        code: "HOST_LOST",
        message: "the worker restarted while running the task",
        infra: true,
      });
      if (done) ids.push(row.id);
    }
    return ids;
  });
  if (requeued.length > 0) deps.wake.notify();
  return requeued;
}
