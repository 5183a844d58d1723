import type { Kysely } from "kysely";
import { withWriteTx } from "../db/database.js";
import type { Database } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import type { EngineDeps } from "./deps.js";
import { afterFinal } from "./finish-task.js";
import { ACTIVE_STATES, type TaskError, type TaskRow } from "./types.js";

/** The task and all its descendants, parents before children. */
export async function collectTree(trx: Kysely<Database>, rootId: number): Promise<number[]> {
  const ids = [rootId];
  let frontier = [rootId];
  while (frontier.length > 0) {
    const children = await trx.selectFrom("tasks").select("id").where("parent_id", "in", frontier).execute();
    frontier = children.map((c) => c.id);
    ids.push(...frontier);
  }
  return ids;
}

/**
 * Cancels the given tasks that are still active. Queued ones end at once; running ones end too,
 * keeping their lease so the worker learns of it on its next heartbeat and kills the job.
 */
export async function cancelIds(
  deps: EngineDeps,
  trx: Kysely<Database>,
  ids: number[],
  error: TaskError,
): Promise<TaskRow[]> {
  if (ids.length === 0) return [];
  const now = deps.clock.now();
  const canceled = await trx
    .updateTable("tasks")
    .set({ state: "canceled", waiting: 0, error: JSON.stringify(error), completed_at: now, updated_at: now })
    .where("id", "in", ids)
    .where("state", "in", ACTIVE_STATES)
    .returningAll()
    .execute();
  for (const row of canceled) await afterFinal(deps, trx, row);
  return canceled;
}

/** Cancels a task and, recursively, its subtasks. A finished task is left as it is. */
export async function cancelTask(
  deps: EngineDeps,
  id: number,
  by: string,
): Promise<{ task: TaskRow; canceled: number[] }> {
  const out = await withWriteTx(deps.db, async (trx) => {
    const task = await trx.selectFrom("tasks").selectAll().where("id", "=", id).executeTakeFirst();
    if (!task) throw new KilnError("TASK_NOT_FOUND", `no task ${id}`);
    const ids = await collectTree(trx, id);
    const rows = await cancelIds(deps, trx, ids, { code: "TASK_CANCELED", message: `canceled by ${by}` });
    const after = await trx.selectFrom("tasks").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    return { task: after, canceled: rows.map((r) => r.id) };
  });
  deps.wake.notify();
  return out;
}
