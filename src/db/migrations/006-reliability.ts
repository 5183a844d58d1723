import type { Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

/**
 * Retry policies per target, a record of every task attempt (for `kiln build-info` and
 * `kiln stats`), build-failure retries counted apart from infra failures, and host quarantine.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);

  // Null: the global default from kiln.toml's [retry] applies.
  await db.schema.alterTable("targets").addColumn("retry_policy", "text").execute();
  await db.schema
    .alterTable("tasks")
    .addColumn("retries", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable("hosts").addColumn("disabled_reason", "text").execute();
  // Infra failures before the last hand enable no longer count towards quarantine.
  await db.schema.alterTable("hosts").addColumn("enabled_at", big).execute();

  await db.schema
    .createTable("task_attempts")
    .addColumn("id", id, pk)
    // No foreign key: attempts are history, and deleting tasks (tests, a future purge) must not trip on it.
    .addColumn("task_id", big, (c) => c.notNull())
    .addColumn("epoch", "integer", (c) => c.notNull())
    .addColumn("host_id", big)
    // closed | failed | retried | requeued | timeout
    .addColumn("outcome", "text", (c) => c.notNull())
    .addColumn("infra", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("error_code", "text")
    .addColumn("exit_code", "integer")
    .addColumn("signal", "text")
    .addColumn("started_at", big)
    .addColumn("ended_at", big, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("task_attempts_task")
    .on("task_attempts")
    .columns(["task_id", "epoch"])
    .execute();
  await db.schema
    .createIndex("task_attempts_host")
    .on("task_attempts")
    .columns(["host_id", "ended_at"])
    .execute();
  await db.schema.createIndex("task_attempts_ended").on("task_attempts").columns(["ended_at"]).execute();
}
