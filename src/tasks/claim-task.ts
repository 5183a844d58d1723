import { sql, type Selectable } from "kysely";
import { withWriteTx } from "../db/database.js";
import type { HostsTable } from "../db/schema.js";
import { leaseMs, type EngineDeps } from "./deps.js";
import type { TaskRow } from "./types.js";

export type HostRow = Selectable<HostsTable>;

/** A host with the summed weight of the tasks it holds (assigned or open). */
export type HostWithLoad = HostRow & { load: number };

/** Hosts by id with their loads, in one statement (raw SQL: it runs for every claim call). */
export async function loadHosts(deps: EngineDeps, ids: number[]): Promise<HostWithLoad[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql<HostWithLoad>`
    SELECT h.*, (
      SELECT COALESCE(SUM(x.weight), 0) FROM tasks x
      WHERE x.host_id = h.id AND x.state IN ('assigned', 'open')
    ) AS load
    FROM hosts h WHERE h.id IN (${sql.join(ids)})`.execute(deps.db.kysely);
  return rows.map((r) => ({ ...r, load: Number(r.load) }));
}

/**
 * Claims the next task this host can run, in one statement: the highest priority, then fair
 * order, among free tasks whose arch and channel the host has, whose weight fits the host's
 * free capacity and that no earlier unfinished task blocks through a conflicting lock.
 * SQLite runs it inside BEGIN IMMEDIATE; PostgreSQL feeds it with FOR UPDATE SKIP LOCKED so
 * concurrent claimers (even in several hub processes) never take the same row.
 */
export async function claimTask(deps: EngineDeps, host: HostRow): Promise<TaskRow | undefined> {
  const arches: string[] = JSON.parse(host.arches) as string[];
  const channels: string[] = JSON.parse(host.channels) as string[];
  if (channels.length === 0 || host.enabled !== 1) return undefined;
  const now = deps.clock.now();
  const expires = now + leaseMs(deps.engine);
  const archList = sql.join(["noarch", ...arches]);
  const channelList = sql.join(channels);
  const skipLocked = deps.db.dialect === "postgres" ? sql`FOR UPDATE SKIP LOCKED` : sql``;
  const statement = sql<TaskRow>`
    UPDATE tasks SET
      state = 'assigned',
      host_id = ${host.id},
      lease_epoch = lease_epoch + 1,
      lease_expires_at = ${expires},
      attempts = attempts + 1,
      started_at = COALESCE(started_at, ${now}),
      claimed_at = ${now},
      updated_at = ${now}
    WHERE state = 'free' AND id = (
      SELECT t.id FROM tasks t
      WHERE t.state = 'free'
        AND t.run_at <= ${now}
        AND t.arch IN (${archList})
        AND t.channel IN (${channelList})
        AND t.weight <= ${host.capacity} - (
          SELECT COALESCE(SUM(x.weight), 0) FROM tasks x
          WHERE x.host_id = ${host.id} AND x.state IN ('assigned', 'open')
        )
        AND NOT EXISTS (
          SELECT 1 FROM task_locks mine
          JOIN task_locks other
            ON other.resource = mine.resource AND other.id < mine.id
            AND (mine.exclusive = 1 OR other.exclusive = 1)
            AND other.task_id <> mine.task_id
          WHERE mine.task_id = t.id
            -- a subtask may take what its parent holds
            AND (t.parent_id IS NULL OR other.task_id <> t.parent_id)
        )
      ORDER BY t.priority DESC, t.fair_vt ASC, t.id ASC
      LIMIT 1
      ${skipLocked}
    )
    RETURNING *`;
  const result = await withWriteTx(deps.db, (trx) => statement.execute(trx));
  return result.rows[0];
}

/**
 * Undoes a claim nobody received (the long poll's connection was gone): the task is free again
 * at once, the attempt uncounted. The bumped epoch stays, so nothing quoting it can act.
 */
export async function unclaimTask(deps: EngineDeps, task: TaskRow): Promise<void> {
  await deps.db.kysely
    .updateTable("tasks")
    .set((eb) => ({
      state: "free",
      host_id: null,
      lease_expires_at: null,
      attempts: eb("attempts", "-", 1),
      updated_at: deps.clock.now(),
    }))
    .where("id", "=", task.id)
    .where("lease_epoch", "=", task.lease_epoch)
    .where("state", "=", "assigned")
    .execute();
  deps.wake.notify();
}
