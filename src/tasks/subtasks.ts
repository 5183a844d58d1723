import { sql } from "kysely";
import { withWriteTx } from "../db/database.js";
import { insertTask, queuedHint, type CreateTaskInput } from "./create-task.js";
import type { EngineDeps } from "./deps.js";
import { explainMiss, type LeaseRef } from "./finish-task.js";
import type { TaskRow } from "./types.js";

export type SubtaskInput = Omit<CreateTaskInput, "owner" | "parentId" | "priority"> & { label: string };

/**
 * Creates subtasks of a running task, idempotently by label: a handler that runs again after a
 * restart gets the same subtasks back instead of new ones. Subtasks inherit owner and priority.
 */
export async function createSubtasks(
  deps: EngineDeps,
  ref: LeaseRef,
  inputs: SubtaskInput[],
): Promise<TaskRow[]> {
  const rows = await withWriteTx(deps.db, async (trx) => {
    const parent = await trx
      .selectFrom("tasks")
      .selectAll()
      .where("id", "=", ref.id)
      .where("lease_epoch", "=", ref.epoch)
      .where("host_id", "=", ref.hostId)
      .where("state", "in", ["assigned", "open"])
      .executeTakeFirst();
    if (!parent) await explainMiss(trx, ref, []);
    const out: TaskRow[] = [];
    for (const input of inputs) {
      const { row } = await insertTask(deps, trx, {
        ...input,
        owner: parent!.owner,
        parentId: parent!.id,
        priority: parent!.priority,
      });
      out.push(row);
    }
    return out;
  });
  deps.wake.notify(queuedHint(rows));
  return rows;
}

/**
 * A parent asks to wait for its subtasks. If they are all done (or one failed) it carries on at
 * once; otherwise it goes to `open` + waiting, gives up its host and capacity, and is queued
 * again when the last subtask finishes or one fails. Handlers then run again from the top.
 */
export async function waitForSubtasks(
  deps: EngineDeps,
  ref: LeaseRef,
): Promise<{ done: boolean; subtasks: TaskRow[] }> {
  return withWriteTx(deps.db, async (trx) => {
    // Lock the parent row so a subtask finishing at the same moment cannot miss the wake-up.
    const lock = deps.db.dialect === "postgres" ? sql`FOR UPDATE` : sql``;
    const parent = (
      await sql<TaskRow>`SELECT * FROM tasks WHERE id = ${ref.id} AND lease_epoch = ${ref.epoch}
        AND host_id = ${ref.hostId} AND state IN ('assigned', 'open') ${lock}`.execute(trx)
    ).rows[0];
    if (!parent) await explainMiss(trx, ref, []);
    const subtasks = await trx
      .selectFrom("tasks")
      .selectAll()
      .where("parent_id", "=", ref.id)
      .orderBy("id")
      .execute();
    const active = subtasks.some((t) => t.state === "free" || t.state === "assigned" || t.state === "open");
    const failed = subtasks.some((t) => t.state === "failed");
    if (!active || failed) return { done: true, subtasks };
    const now = deps.clock.now();
    await trx
      .updateTable("tasks")
      .set({ state: "open", waiting: 1, host_id: null, lease_expires_at: null, updated_at: now })
      .where("id", "=", ref.id)
      .where("lease_epoch", "=", ref.epoch)
      .execute();
    return { done: false, subtasks };
  });
}
