import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";

/**
 * Appends an event in the caller's transaction and returns its id. Ids only grow, so tag history
 * can be queried "as of event N" (Koji's event ids) and followers can resume from an id.
 */
export async function recordEvent(
  trx: Kysely<Database>,
  type: string,
  data: Record<string, unknown>,
  actor: string | null,
  now: number,
): Promise<number> {
  const row = await trx
    .insertInto("events")
    .values({ type, data: JSON.stringify(data), actor, created_at: now })
    .returning("id")
    .executeTakeFirstOrThrow();
  return row.id;
}

export async function latestEventId(db: Kysely<Database>): Promise<number> {
  const row = await db
    .selectFrom("events")
    .select((eb) => eb.fn.max("id").as("id"))
    .executeTakeFirst();
  return row?.id ?? 0;
}
