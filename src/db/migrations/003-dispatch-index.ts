import type { Kysely } from "kysely";
import type { Dialect } from "../database.js";

/**
 * The claim orders by (priority DESC, fair_vt, id): an index with the same mixed directions lets
 * both SQLite and PostgreSQL walk it in dispatch order and stop at the first runnable task,
 * instead of sorting every free task on each claim.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema.dropIndex("tasks_dispatch").execute();
  await db.schema
    .createIndex("tasks_dispatch_order")
    .on("tasks")
    .columns(["state", "priority desc", "fair_vt", "id"])
    .execute();
}
