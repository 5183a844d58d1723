import { sql, type Kysely } from "kysely";
import { withWriteTx } from "../db/database.js";
import type { Database } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import type { EngineDeps } from "./deps.js";
import { hasFinalizers, runFinalizers } from "./finalizers.js";
import { recordTaskEvent } from "../events/task-events.js";
import { appendLogInTx } from "./task-logs.js";
import { backoffDelayMs } from "./retry.js";
import { recordAttempt } from "./task-attempts.js";
import type { EngineConfig } from "../config/config.js";
import { isFinal, RUNNING_STATES, type TaskError, type TaskRow } from "./types.js";
import type { WakeHint } from "./wake.js";

/**
 * Decides whether a failed attempt of a method runs again (a build step whose failure the
 * target's retry policy calls transient). Registered by the code that knows what tasks mean, so
 * the engine stays unaware of builds.
 */
export type RetryRule = (
  trx: Kysely<Database>,
  task: TaskRow,
  error: TaskError,
  engine: EngineConfig,
) => Promise<boolean>;

const RETRY_RULES = new Map<string, RetryRule>();

export function registerRetryRule(method: string, rule: RetryRule): void {
  RETRY_RULES.set(method, rule);
}

/** Who is calling about a task: the lease they hold. */
export interface LeaseRef {
  id: number;
  epoch: number;
  hostId: number;
}

/**
 * A guarded update matched no row: say why. A replay of the very call that already took effect
 * (same epoch, same host, the state it would have set) is success, so workers can retry calls
 * safely; anything else is an error the caller sees.
 */
export async function explainMiss(
  trx: Kysely<Database>,
  ref: LeaseRef,
  replayStates: readonly string[],
): Promise<TaskRow> {
  const row = await trx.selectFrom("tasks").selectAll().where("id", "=", ref.id).executeTakeFirst();
  if (!row) throw new KilnError("TASK_NOT_FOUND", `no task ${ref.id}`);
  if (row.lease_epoch !== ref.epoch) {
    throw new KilnError("LEASE_STALE", undefined, {
      taskId: ref.id,
      epoch: ref.epoch,
      current: row.lease_epoch,
    });
  }
  const ownHost = row.host_id === ref.hostId || row.host_id === null;
  if (ownHost && replayStates.includes(row.state)) return row;
  if (row.host_id === null && !isFinal(row.state)) {
    // Requeued after its lease ran out: whoever calls holds a lease that is gone.
    throw new KilnError("LEASE_STALE", undefined, { taskId: ref.id, epoch: ref.epoch });
  }
  if (!ownHost) throw new KilnError("HOST_MISMATCH", `task ${ref.id} is not assigned to this host`);
  if (row.state === "canceled") throw new KilnError("TASK_CANCELED", `task ${ref.id} was canceled`);
  throw new KilnError("TASK_FINISHED", `task ${ref.id} is already ${row.state}`, { state: row.state });
}

function guarded(trx: Kysely<Database>, ref: LeaseRef) {
  return trx
    .updateTable("tasks")
    .where("id", "=", ref.id)
    .where("lease_epoch", "=", ref.epoch)
    .where("host_id", "=", ref.hostId)
    .where("state", "in", RUNNING_STATES)
    .where("waiting", "=", 0);
}

/**
 * Bookkeeping after a task reaches a final state, in the same transaction: its locks go, and a
 * parent waiting on it wakes when all its children are done or one of them failed.
 */
export async function afterFinal(deps: EngineDeps, trx: Kysely<Database>, row: TaskRow): Promise<void> {
  // `locks` lists what the task declared, which is all task_locks ever holds for it.
  if (row.locks !== null) await trx.deleteFrom("task_locks").where("task_id", "=", row.id).execute();
  const now = deps.clock.now();
  await recordTaskEvent(trx, row.state as "closed" | "failed" | "canceled", row, now);
  await runFinalizers(trx, row, now);
  if (row.parent_id === null) return;
  if (deps.db.dialect === "postgres") {
    // Siblings finishing at once must not each see the other still running and leave the parent
    // asleep: take the parent's row lock first, so the check below (a fresh snapshot under READ
    // COMMITTED) sees every sibling that finished before us.
    await sql`SELECT id FROM tasks WHERE id = ${row.parent_id} FOR UPDATE`.execute(trx);
  }
  let wake = trx
    .updateTable("tasks")
    .set({ state: "free", waiting: 0, run_at: now, updated_at: now })
    .where("id", "=", row.parent_id)
    .where("state", "=", "open")
    .where("waiting", "=", 1);
  if (row.state !== "failed") {
    wake = wake.where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("tasks as c")
            .select("c.id")
            .where("c.parent_id", "=", row.parent_id)
            .where("c.state", "in", ["free", "assigned", "open"]),
        ),
      ),
    );
  }
  await wake.execute();
}

export async function startTask(deps: EngineDeps, ref: LeaseRef): Promise<TaskRow> {
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const row = await guarded(trx, ref)
      .where("state", "=", "assigned")
      .set({ state: "open", updated_at: now })
      .returningAll()
      .executeTakeFirst();
    if (row) await recordTaskEvent(trx, "started", row, now);
    return row ?? explainMiss(trx, ref, ["open"]);
  });
}

/**
 * The wake-up after a host's own call ended a task: its capacity there is free again, and nothing
 * else changed unless locks were released, a parent woken, a finalizer run or the task queued again.
 */
function finishedHint(row: TaskRow, ref: LeaseRef): WakeHint {
  const only =
    row.state !== "free" && row.locks === null && row.parent_id === null && !hasFinalizers(row.method);
  return { kind: "finished", hostId: ref.hostId, weight: row.weight, only };
}

/** The last chunk of an attempt's log, carried by the call that finishes it. */
export interface FinalLogChunk {
  offset: number;
  data: string;
}

/**
 * Runs a finishing update with the attempt's last log chunk in the same transaction. When the
 * update took effect it has fenced the call, so the chunk is appended without another look at
 * the task; when it missed (a replay, a cancel, a stale lease) the chunk is appended only as a log
 * call would be, fenced by epoch and host, so a task canceled meanwhile keeps its output and a
 * replay appends nothing. A refused chunk (LOG_GAP, LOG_TOO_LARGE) refuses the whole call, which
 * then changes nothing; an error explaining a missed update is thrown after the commit, so that
 * the chunk stays.
 */
async function finishWithLog(
  deps: EngineDeps,
  ref: LeaseRef,
  log: FinalLogChunk | undefined,
  update: (trx: Kysely<Database>) => Promise<TaskRow | undefined>,
  miss: (trx: Kysely<Database>) => Promise<TaskRow>,
): Promise<TaskRow> {
  const out = await withWriteTx<{ row: TaskRow } | { error: KilnError }>(deps.db, async (trx) => {
    const row = await update(trx);
    if (row) {
      if (log) await appendLogInTx(deps, trx, ref, log, { fenced: true });
      return { row };
    }
    if (log) await appendLogInTx(deps, trx, ref, log);
    try {
      return { row: await miss(trx) };
    } catch (error) {
      if (!log || !(error instanceof KilnError)) throw error;
      return { error };
    }
  });
  if ("error" in out) throw out.error;
  return out.row;
}

export async function completeTask(
  deps: EngineDeps,
  ref: LeaseRef,
  result: unknown,
  log?: FinalLogChunk,
): Promise<TaskRow> {
  const now = deps.clock.now();
  const row = await finishWithLog(
    deps,
    ref,
    log,
    async (trx) => {
      const done = await guarded(trx, ref)
        .set({
          state: "closed",
          result: JSON.stringify(result ?? null),
          error: null,
          completed_at: now,
          lease_expires_at: null,
          updated_at: now,
        })
        .returningAll()
        .executeTakeFirst();
      if (done) {
        await recordAttempt(deps, trx, done, "closed", null);
        await afterFinal(deps, trx, done);
      }
      return done;
    },
    (trx) => explainMiss(trx, ref, ["closed"]),
  );
  deps.wake.notify(finishedHint(row, ref));
  return row;
}

/**
 * Puts a task whose host was lost back in the queue, counting an infra failure and backing off;
 * after too many it fails as poison. Guarded by the lease epoch it had.
 */
export async function requeueInfra(
  deps: EngineDeps,
  trx: Kysely<Database>,
  row: TaskRow,
  reason: TaskError,
): Promise<TaskRow | undefined> {
  const now = deps.clock.now();
  const failures = row.infra_failures + 1;
  const base = trx
    .updateTable("tasks")
    .where("id", "=", row.id)
    .where("lease_epoch", "=", row.lease_epoch)
    .where("state", "in", RUNNING_STATES);
  if (failures >= deps.engine.maxInfraFailures) {
    const error: TaskError = {
      code: "HOST_LOST",
      message: `lost its host ${failures} times; last: ${reason.message}`,
      infra: true,
    };
    const failed = await base
      .set({
        state: "failed",
        infra_failures: failures,
        error: JSON.stringify(error),
        completed_at: now,
        lease_expires_at: null,
        updated_at: now,
      })
      .returningAll()
      .executeTakeFirst();
    if (failed) {
      await recordAttempt(deps, trx, row, "failed", reason);
      await afterFinal(deps, trx, failed);
    }
    return failed;
  }
  const delay = backoffDelayMs(failures, deps.engine.backoffBase, deps.engine.backoffMax);
  const requeued = await base
    .set({
      state: "free",
      host_id: null,
      lease_expires_at: null,
      infra_failures: failures,
      error: JSON.stringify(reason),
      run_at: now + delay,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirst();
  if (requeued) await recordAttempt(deps, trx, row, "requeued", reason);
  return requeued;
}

/**
 * A build failure the method's retry rule calls transient: the task goes back to the queue with
 * exponential backoff and full jitter, counting a retry. Guarded like every transition.
 */
async function requeueRetry(
  deps: EngineDeps,
  trx: Kysely<Database>,
  ref: LeaseRef,
  row: TaskRow,
  error: TaskError,
): Promise<TaskRow | undefined> {
  const now = deps.clock.now();
  const retries = row.retries + 1;
  const delay = backoffDelayMs(retries, deps.engine.backoffBase, deps.engine.backoffMax);
  const requeued = await guarded(trx, ref)
    .set({
      state: "free",
      host_id: null,
      lease_expires_at: null,
      retries,
      error: JSON.stringify(error),
      run_at: now + delay,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirst();
  if (requeued) await recordAttempt(deps, trx, row, "retried", error);
  return requeued;
}

export async function failTask(
  deps: EngineDeps,
  ref: LeaseRef,
  error: TaskError,
  log?: FinalLogChunk,
): Promise<TaskRow> {
  const now = deps.clock.now();
  const row = await finishWithLog(
    deps,
    ref,
    log,
    async (trx) => {
      if (error.infra) {
        const current = await guarded(trx, ref).set({ updated_at: now }).returningAll().executeTakeFirst();
        return current && ((await requeueInfra(deps, trx, current, error)) ?? current);
      }
      const during = await trx.selectFrom("tasks").selectAll().where("id", "=", ref.id).executeTakeFirst();
      const rule = during && RETRY_RULES.get(during.method);
      if (during && rule && (await rule(trx, during, error, deps.engine))) {
        const requeued = await requeueRetry(deps, trx, ref, during, error);
        if (requeued) return requeued;
      }
      const failed = await guarded(trx, ref)
        .set({
          state: "failed",
          error: JSON.stringify(error),
          completed_at: now,
          lease_expires_at: null,
          updated_at: now,
        })
        .returningAll()
        .executeTakeFirst();
      if (failed) {
        await recordAttempt(deps, trx, failed, "failed", error);
        await afterFinal(deps, trx, failed);
      }
      return failed;
    },
    // A retried build failure is back in the queue, as a requeued infra failure is.
    (trx) => explainMiss(trx, ref, ["free", "failed"]),
  );
  deps.wake.notify(finishedHint(row, ref));
  return row;
}

/** A worker hands a task back (shutdown): it runs again at once, no failure counted. */
export async function releaseTask(deps: EngineDeps, ref: LeaseRef): Promise<TaskRow> {
  const now = deps.clock.now();
  const row = await withWriteTx(deps.db, async (trx) => {
    const freed = await guarded(trx, ref)
      .set({ state: "free", host_id: null, lease_expires_at: null, run_at: now, updated_at: now })
      .returningAll()
      .executeTakeFirst();
    return freed ?? explainMiss(trx, ref, ["free"]);
  });
  deps.wake.notify();
  return row;
}
