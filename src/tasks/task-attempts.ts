import { sql, type Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { recordEvent } from "../events/outbox.js";
import type { EngineDeps } from "./deps.js";
import type { TaskError, TaskRow } from "./types.js";

/** How one attempt (one claim, one lease epoch) of a task ended. */
export type AttemptOutcome = "closed" | "failed" | "retried" | "requeued" | "timeout";

/** What the engine tells an observer (the hub's metrics) when an attempt ends. */
export interface AttemptEnd {
  method: string;
  outcome: AttemptOutcome;
  infra: boolean;
  /** From runnable to claimed, and from claimed to the end; null when never claimed. */
  waitMs: number | null;
  runMs: number | null;
}

export interface TaskObserver {
  attemptEnded(end: AttemptEnd): void;
}

/**
 * Records an attempt's end in the caller's transaction, from the task row as it was during the
 * attempt (host, epoch, claim time). Infra failures may quarantine the host.
 */
export async function recordAttempt(
  deps: EngineDeps,
  trx: Kysely<Database>,
  during: TaskRow,
  outcome: AttemptOutcome,
  error: TaskError | null,
): Promise<void> {
  const now = deps.clock.now();
  const infra = error?.infra === true;
  await trx
    .insertInto("task_attempts")
    .values({
      task_id: during.id,
      epoch: during.lease_epoch,
      host_id: during.host_id,
      outcome,
      infra: infra ? 1 : 0,
      error_code: error?.code ?? null,
      exit_code: error?.exitCode ?? null,
      signal: error?.signal ?? null,
      started_at: during.claimed_at,
      ended_at: now,
    })
    .execute();
  deps.observer?.attemptEnded({
    method: during.method,
    outcome,
    infra,
    waitMs: during.claimed_at === null ? null : Math.max(0, during.claimed_at - during.run_at),
    runMs: during.claimed_at === null ? null : Math.max(0, now - during.claimed_at),
  });
  if (infra && during.host_id !== null) await quarantineIfFailing(deps, trx, during.host_id, now);
}

/**
 * A host whose tasks keep failing for infra reasons stops getting work. Failures at one instant
 * (a worker restart, one sweep finding all its leases expired) count as one incident; the hub's
 * own host is never quarantined, since every hub-side task would then stall.
 */
async function quarantineIfFailing(
  deps: EngineDeps,
  trx: Kysely<Database>,
  hostId: number,
  now: number,
): Promise<void> {
  const { quarantineFailures: limit, quarantineWindow: window } = deps.engine;
  if (!(limit > 0)) return;
  const host = await trx
    .selectFrom("hosts")
    .select(["name", "enabled", "channels", "enabled_at"])
    .where("id", "=", hostId)
    .executeTakeFirst();
  if (!host || host.enabled !== 1 || (JSON.parse(host.channels) as string[]).includes("hub")) return;
  const since = Math.max(now - window * 1000, host.enabled_at ?? 0);
  const row = await trx
    .selectFrom("task_attempts")
    .select(sql<number>`COUNT(DISTINCT ended_at)`.as("n"))
    .where("host_id", "=", hostId)
    .where("infra", "=", 1)
    .where("ended_at", ">", since)
    .executeTakeFirst();
  const incidents = Number(row?.n ?? 0);
  if (incidents < limit) return;
  const reason = `quarantined: ${incidents} infra failures within ${window} s`;
  const updated = await trx
    .updateTable("hosts")
    .set({ enabled: 0, disabled_reason: reason })
    .where("id", "=", hostId)
    .where("enabled", "=", 1)
    .executeTakeFirst();
  if (updated.numUpdatedRows === 0n) return;
  await recordEvent(trx, "host.quarantined", { host: host.name, hostId, reason, incidents }, null, now);
  deps.log.warn({ host: host.name, incidents }, "host quarantined after repeated infra failures");
}
