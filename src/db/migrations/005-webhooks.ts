import { sql, type Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

/**
 * Webhooks and their deliveries. A webhook reads the event outbox from its own cursor; each
 * matching event becomes one delivery (its id and uuid stay the same on every retry), and each
 * try of a delivery is an attempt row, so the CLI can show what the receiver said.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);

  if (dialect === "postgres") {
    // A bigserial id is taken at insert and may commit after a larger one: a reader that moved
    // its cursor past the larger id would skip it for good. The writing transaction's id lets
    // readers stop at the oldest transaction still running (SQLite has one writer at a time).
    await sql`ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()`.execute(db);
  }

  await db.schema
    .createTable("webhooks")
    .addColumn("id", id, pk)
    .addColumn("url", "text", (c) => c.notNull())
    .addColumn("events", "text", (c) => c.notNull())
    .addColumn("secret", "text")
    .addColumn("format", "text", (c) => c.notNull().defaultTo("json"))
    .addColumn("description", "text")
    .addColumn("enabled", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("disabled_reason", "text")
    .addColumn("cursor", big, (c) => c.notNull())
    .addColumn("lease_owner", "text")
    .addColumn("lease_until", big)
    .addColumn("created_by", "text")
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("updated_at", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("webhook_deliveries")
    .addColumn("id", id, pk)
    .addColumn("uuid", "text", (c) => c.notNull().unique())
    .addColumn("webhook_id", big, (c) => c.notNull().references("webhooks.id").onDelete("cascade"))
    .addColumn("event_id", big, (c) => c.notNull())
    .addColumn("event_type", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("next_attempt_at", big, (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("completed_at", big)
    .addUniqueConstraint("webhook_deliveries_event", ["webhook_id", "event_id"])
    .execute();
  await db.schema
    .createIndex("webhook_deliveries_pending")
    .on("webhook_deliveries")
    .columns(["webhook_id", "state", "id"])
    .execute();

  await db.schema
    .createTable("webhook_attempts")
    .addColumn("id", id, pk)
    .addColumn("delivery_id", big, (c) => c.notNull().references("webhook_deliveries.id").onDelete("cascade"))
    .addColumn("attempt", "integer", (c) => c.notNull())
    .addColumn("started_at", big, (c) => c.notNull())
    .addColumn("duration_ms", "integer", (c) => c.notNull())
    .addColumn("status", "integer")
    .addColumn("error", "text")
    .addColumn("response", "text")
    .execute();
  await db.schema
    .createIndex("webhook_attempts_delivery")
    .on("webhook_attempts")
    .columns(["delivery_id", "attempt"])
    .execute();
}
