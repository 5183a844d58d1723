import { withWriteTx } from "../db/database.js";
import { KilnError } from "../errors/catalogue.js";
import { insertLocks } from "./create-task.js";
import { collectTree } from "./cancel-task.js";
import type { EngineDeps } from "./deps.js";
import type { LockSpec, TaskRow } from "./types.js";

/**
 * Reruns a failed or canceled task by hand. Its subtasks that did not close run again too;
 * those that closed keep their results, so a retried build redoes only what failed.
 * It joins the back of the queue for its resource locks.
 */
export async function retryTask(deps: EngineDeps, id: number): Promise<TaskRow> {
  const row = await withWriteTx(deps.db, async (trx) => {
    const task = await trx.selectFrom("tasks").selectAll().where("id", "=", id).executeTakeFirst();
    if (!task) throw new KilnError("TASK_NOT_FOUND", `no task ${id}`);
    if (task.state !== "failed" && task.state !== "canceled") {
      throw new KilnError(
        "TASK_NOT_RETRYABLE",
        `task ${id} is ${task.state}; only failed or canceled tasks can be retried`,
      );
    }
    if (task.parent_id !== null) {
      const parent = await trx
        .selectFrom("tasks")
        .select("state")
        .where("id", "=", task.parent_id)
        .executeTakeFirst();
      if (parent && (parent.state === "failed" || parent.state === "canceled")) {
        throw new KilnError("TASK_NOT_RETRYABLE", `retry the parent task ${task.parent_id} instead`);
      }
    }
    const now = deps.clock.now();
    const ids = await collectTree(trx, id);
    const reset = await trx
      .updateTable("tasks")
      .set({
        state: "free",
        waiting: 0,
        host_id: null,
        lease_expires_at: null,
        infra_failures: 0,
        result: null,
        error: null,
        run_at: now,
        completed_at: null,
        updated_at: now,
      })
      .where("id", "in", ids)
      .where("state", "in", ["failed", "canceled"])
      .returningAll()
      .execute();
    for (const r of reset) {
      if (r.locks) await insertLocks(trx, r.id, JSON.parse(r.locks) as LockSpec[], deps.db.dialect);
    }
    return trx.selectFrom("tasks").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  });
  deps.wake.notify();
  return row;
}
