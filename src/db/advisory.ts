import { sql, type Kysely } from "kysely";
import type { Database } from "./schema.js";

/**
 * The first key of Kiln's two-key PostgreSQL advisory locks on named resources ("kiln" in
 * ASCII). The single-bigint key space belongs to the event order (migration 008), so the two
 * never meet.
 */
const RESOURCE_LOCK_CLASS = 0x6b696c6e;

/** Holds an exclusive lock on `resource` until the transaction ends (PostgreSQL only). */
export async function lockResource(trx: Kysely<Database>, resource: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${RESOURCE_LOCK_CLASS}::int, hashtext(${resource}))`.execute(trx);
}
