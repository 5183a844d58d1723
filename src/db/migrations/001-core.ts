import { sql, type Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);
  const real = dialect === "postgres" ? "double precision" : "real";

  await db.schema
    .createTable("users")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("hosts")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("arches", "text", (c) => c.notNull())
    .addColumn("channels", "text", (c) => c.notNull())
    .addColumn("capacity", real, (c) => c.notNull())
    .addColumn("enabled", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("ready", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("description", "text")
    .addColumn("reported", "text")
    .addColumn("last_seen_at", big)
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("tokens")
    .addColumn("id", id, pk)
    .addColumn("user_id", big, (c) => c.references("users.id").onDelete("cascade"))
    .addColumn("host_id", big, (c) => c.references("hosts.id").onDelete("cascade"))
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("description", "text")
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("last_used_at", big)
    .addColumn("revoked_at", big)
    .execute();

  await db.schema
    .createTable("tasks")
    .addColumn("id", id, pk)
    .addColumn("method", "text", (c) => c.notNull())
    .addColumn("args", "text", (c) => c.notNull())
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("parent_id", big, (c) => c.references("tasks.id"))
    .addColumn("label", "text")
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("waiting", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("priority", "integer", (c) => c.notNull())
    .addColumn("fair_vt", big, (c) => c.notNull())
    .addColumn("arch", "text", (c) => c.notNull())
    .addColumn("channel", "text", (c) => c.notNull())
    .addColumn("weight", real, (c) => c.notNull())
    .addColumn("host_id", big, (c) => c.references("hosts.id"))
    .addColumn("lease_epoch", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("lease_expires_at", big)
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("infra_failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("run_at", big, (c) => c.notNull())
    .addColumn("timeout_s", "integer", (c) => c.notNull())
    .addColumn("locks", "text")
    .addColumn("result", "text")
    .addColumn("error", "text")
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("started_at", big)
    .addColumn("claimed_at", big)
    .addColumn("completed_at", big)
    .addColumn("updated_at", big, (c) => c.notNull())
    .execute();
  // The claim walks this index in dispatch order.
  await db.schema
    .createIndex("tasks_dispatch")
    .on("tasks")
    .columns(["state", "priority", "fair_vt", "id"])
    .execute();
  await db.schema
    .createIndex("tasks_owner_queue")
    .on("tasks")
    .columns(["state", "owner", "priority", "fair_vt"])
    .execute();
  await db.schema.createIndex("tasks_host").on("tasks").columns(["host_id", "state"]).execute();
  await db.schema.createIndex("tasks_parent").on("tasks").columns(["parent_id"]).execute();
  await db.schema.createIndex("tasks_lease").on("tasks").columns(["state", "lease_expires_at"]).execute();
  await db.schema
    .createIndex("tasks_parent_label")
    .on("tasks")
    .columns(["parent_id", "label"])
    .unique()
    .where(sql.ref("label"), "is not", null)
    .execute();

  await db.schema
    .createTable("task_locks")
    .addColumn("id", id, pk)
    .addColumn("task_id", big, (c) => c.notNull().references("tasks.id"))
    .addColumn("resource", "text", (c) => c.notNull())
    .addColumn("exclusive", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("task_locks_resource").on("task_locks").columns(["resource", "id"]).execute();
  await db.schema.createIndex("task_locks_task").on("task_locks").columns(["task_id"]).execute();

  await db.schema
    .createTable("task_logs")
    .addColumn("task_id", big, (c) => c.notNull().references("tasks.id"))
    .addColumn("epoch", "integer", (c) => c.notNull())
    .addColumn("offset", big, (c) => c.notNull())
    .addColumn("data", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("task_logs_pk", ["task_id", "epoch", "offset"])
    .execute();
}
