import { sql, type Kysely, type Selectable } from "kysely";
import type { Db } from "../db/database.js";
import type { Database, EventsTable } from "../db/schema.js";
import type { EventJson } from "./event-json.js";
import { matchesPatterns } from "./event-types.js";

export type EventRow = Selectable<EventsTable>;

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

/**
 * Events after `since`, oldest first, that a reader may safely move its cursor past. On
 * PostgreSQL an id is drawn at insert but seen only at commit, so a smaller id can appear after
 * a larger one: only ids below every id a transaction still writing events may yet commit are
 * returned (migration 008; the rest follow as soon as those transactions end). SQLite has one
 * writer, so ids commit in order.
 */
export async function readEvents(
  db: Db,
  opts: {
    since?: number;
    types?: readonly string[];
    limit?: number;
    /** The newest `limit` events instead of the oldest after `since` (still returned oldest first). */
    newest?: boolean;
    trx?: Kysely<Database>;
  },
): Promise<EventRow[]> {
  const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000);
  const conn = opts.trx ?? db.kysely;
  let q = conn
    .selectFrom("events")
    .select(["id", "type", "actor", "data", "created_at"])
    .where("id", ">", opts.since ?? 0);
  if (db.dialect === "postgres") {
    // Its own statement: the events must be read with a snapshot taken after the horizon was.
    const { rows } = await sql<{ h: string | null }>`SELECT kiln_event_horizon() AS h`.execute(conn);
    q = q.where("id", "<=", Number(rows[0]?.h ?? 0));
  }
  const types = opts.types;
  if (types && types.length > 0 && !types.includes("*")) {
    const exact = types.filter((t) => !t.endsWith(".*"));
    const prefixes = types.filter((t) => t.endsWith(".*")).map((t) => t.slice(0, -1));
    q = q.where((eb) =>
      eb.or([
        ...(exact.length > 0 ? [eb("type", "in", exact)] : []),
        ...prefixes.map((p) => eb("type", "like", `${p}%`)),
      ]),
    );
  }
  const rows = opts.newest
    ? (await q.orderBy("id", "desc").limit(limit).execute()).reverse()
    : await q.orderBy("id", "asc").limit(limit).execute();
  // LIKE's `_` matches any character: keep only what the patterns really name.
  return types && types.length > 0 ? rows.filter((r) => matchesPatterns(r.type, types)) : rows;
}

export function toEventJson(row: EventRow): EventJson {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(row.data) as Record<string, unknown>;
  } catch {
    data = {};
  }
  return {
    id: row.id,
    type: row.type,
    actor: row.actor,
    data,
    createdAt: new Date(row.created_at).toISOString(),
  };
}
