import type { Kysely } from "kysely";
import type { HostJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import type { Db } from "./database.js";
import type { Database } from "./schema.js";
import type { HostRow } from "../tasks/claim-task.js";
import { recordEvent } from "../events/outbox.js";

/**
 * Marks a host as seen now. Most calls find it ready already and change one timestamp; when it
 * was offline, it becomes ready and `host.online` is recorded in the caller's transaction.
 */
export async function markHostSeen(
  trx: Kysely<Database>,
  hostId: number,
  now: number,
  extra: { reported?: string } = {},
): Promise<void> {
  const seen = await trx
    .updateTable("hosts")
    .set({ last_seen_at: now, ...extra })
    .where("id", "=", hostId)
    .where("ready", "=", 1)
    .executeTakeFirst();
  if (seen.numUpdatedRows > 0n) return;
  const back = await trx
    .updateTable("hosts")
    .set({ ready: 1, last_seen_at: now, ...extra })
    .where("id", "=", hostId)
    .where("ready", "=", 0)
    .returning(["id", "name"])
    .executeTakeFirst();
  if (back) await recordEvent(trx, "host.online", { host: back.name, hostId: back.id }, null, now);
}

export const HOST_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const ARCH_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const CHANNEL_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export interface HostInput {
  arches?: string[];
  channels?: string[];
  capacity?: number;
  description?: string | null;
  enabled?: boolean;
}

export function validateHostInput(input: HostInput): void {
  if (input.arches !== undefined) {
    if (input.arches.length === 0) throw new KilnError("VALIDATION_FAILED", "a host needs at least one arch");
    for (const a of input.arches) {
      if (!ARCH_RE.test(a)) throw new KilnError("VALIDATION_FAILED", `"${a}" is not a Debian arch name`);
    }
  }
  if (input.channels !== undefined) {
    for (const c of input.channels) {
      if (!CHANNEL_RE.test(c)) throw new KilnError("VALIDATION_FAILED", `"${c}" is not a valid channel name`);
    }
  }
  if (
    input.capacity !== undefined &&
    !(typeof input.capacity === "number" && input.capacity > 0 && input.capacity <= 10000)
  ) {
    throw new KilnError("VALIDATION_FAILED", "capacity must be a number above 0");
  }
}

export async function getHostByName(db: Kysely<Database>, name: string): Promise<HostRow> {
  const row = await db.selectFrom("hosts").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) throw new KilnError("HOST_NOT_FOUND", `no host named "${name}"; see \`kiln host list\``);
  return row;
}

export async function getHostById(db: Kysely<Database>, id: number): Promise<HostRow> {
  const row = await db.selectFrom("hosts").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new KilnError("HOST_NOT_FOUND", `no host ${id}`);
  return row;
}

export async function insertHost(
  db: Kysely<Database>,
  name: string,
  input: Required<Pick<HostInput, "arches">> & HostInput,
  now: number,
): Promise<HostRow> {
  if (!HOST_NAME_RE.test(name)) throw new KilnError("INVALID_NAME", `"${name}" is not a valid host name`);
  validateHostInput(input);
  const existing = await db.selectFrom("hosts").select("id").where("name", "=", name).executeTakeFirst();
  if (existing) throw new KilnError("HOST_EXISTS", `a host named "${name}" already exists`);
  return db
    .insertInto("hosts")
    .values({
      name,
      arches: JSON.stringify(input.arches),
      channels: JSON.stringify(input.channels ?? ["default"]),
      capacity: input.capacity ?? 2,
      enabled: input.enabled === false ? 0 : 1,
      ready: 0,
      description: input.description ?? null,
      reported: null,
      last_seen_at: null,
      created_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Changes a host; enabling or disabling it records host.enabled / host.disabled (pass a transaction to make that atomic). */
export async function updateHost(
  db: Kysely<Database>,
  name: string,
  input: HostInput,
  now: number = Date.now(),
): Promise<HostRow> {
  validateHostInput(input);
  const set: Partial<Record<string, unknown>> = {};
  if (input.arches !== undefined) set.arches = JSON.stringify(input.arches);
  if (input.channels !== undefined) set.channels = JSON.stringify(input.channels);
  if (input.capacity !== undefined) set.capacity = input.capacity;
  if (input.description !== undefined) set.description = input.description;
  if (input.enabled !== undefined) {
    // Only a real change of state is an event; the guard on the old value tells which.
    const flipped = await db
      .updateTable("hosts")
      .set({ enabled: input.enabled ? 1 : 0 })
      .where("name", "=", name)
      .where("enabled", "=", input.enabled ? 0 : 1)
      .returning(["id", "name"])
      .executeTakeFirst();
    if (flipped) {
      const type = input.enabled ? "host.enabled" : "host.disabled";
      await recordEvent(db, type, { host: flipped.name, hostId: flipped.id }, null, now);
    }
  }
  if (Object.keys(set).length === 0) return getHostByName(db, name);
  const row = await db
    .updateTable("hosts")
    .set(set)
    .where("name", "=", name)
    .returningAll()
    .executeTakeFirst();
  if (!row) throw new KilnError("HOST_NOT_FOUND", `no host named "${name}"; see \`kiln host list\``);
  return row;
}

export async function hostLoads(db: Db): Promise<Map<number, number>> {
  const rows = await db.kysely
    .selectFrom("tasks")
    .select(["host_id", (eb) => eb.fn.sum<number>("weight").as("load")])
    .where("host_id", "is not", null)
    .where("state", "in", ["assigned", "open"])
    .groupBy("host_id")
    .execute();
  return new Map(rows.map((r) => [r.host_id ?? 0, Number(r.load)]));
}

export function toHostJson(row: HostRow, load: number): HostJson {
  return {
    id: row.id,
    name: row.name,
    arches: JSON.parse(row.arches) as string[],
    channels: JSON.parse(row.channels) as string[],
    capacity: row.capacity,
    load,
    enabled: row.enabled === 1,
    ready: row.ready === 1,
    description: row.description,
    reported: row.reported ? (JSON.parse(row.reported) as Record<string, unknown>) : null,
    lastSeenAt: row.last_seen_at === null ? null : new Date(row.last_seen_at).toISOString(),
    createdAt: new Date(row.created_at).toISOString(),
  };
}
