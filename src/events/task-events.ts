import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { TaskRow } from "../tasks/types.js";
import { recordEvent } from "./outbox.js";

/**
 * Records a task's change of state (`task.started`, `task.closed`, `task.failed`,
 * `task.canceled`) in the caller's transaction. It runs on the engine's hot path: one INSERT with
 * a small payload, nothing read, and only in transactions the engine opens anyway (so no
 * `task.created`: a plain submission is one statement without a transaction).
 */
export async function recordTaskEvent(
  trx: Kysely<Database>,
  verb: "started" | "closed" | "failed" | "canceled",
  row: TaskRow,
  now: number,
): Promise<void> {
  const data: Record<string, unknown> = { taskId: row.id, method: row.method, owner: row.owner };
  if (row.parent_id !== null) data.parentId = row.parent_id;
  if (verb === "started") {
    data.hostId = row.host_id;
    data.epoch = row.lease_epoch;
  }
  if ((verb === "failed" || verb === "canceled") && row.error !== null) {
    try {
      const error = JSON.parse(row.error) as { code?: unknown; message?: unknown };
      data.error = { code: error.code, message: error.message };
    } catch {
      // A malformed error column says nothing worth sending.
    }
  }
  await recordEvent(trx, `task.${verb}`, data, null, now);
}
