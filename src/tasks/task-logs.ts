import type { Kysely } from "kysely";
import { withWriteTx } from "../db/database.js";
import type { Database } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import type { EngineDeps } from "./deps.js";
import type { LeaseRef } from "./finish-task.js";

export interface LogChunk {
  epoch: number;
  offset: number;
  data: string;
}

/**
 * Appends a chunk of a task's log for the attempt (epoch) that wrote it. Offsets are byte
 * offsets: a replayed chunk is accepted and ignored, a gap is refused, and a stale epoch never
 * writes. Each attempt's log is kept apart, so a retry's log never mixes with the last one's.
 */
export async function appendLog(
  deps: EngineDeps,
  ref: LeaseRef,
  chunk: { offset: number; data: string },
): Promise<{ size: number }> {
  return withWriteTx(deps.db, (trx) => appendLogInTx(deps, trx, ref, chunk));
}

/**
 * appendLog inside an open write transaction (complete and fail carry the log's last chunk).
 * Fenced by epoch and host only, not by state: output a task wrote before it was canceled or
 * finished still belongs to its log.
 */
export async function appendLogInTx(
  deps: EngineDeps,
  trx: Kysely<Database>,
  ref: LeaseRef,
  chunk: { offset: number; data: string },
  opts: { fenced?: boolean } = {},
): Promise<{ size: number }> {
  const bytes = Buffer.byteLength(chunk.data, "utf8");
  // `fenced`: the caller's guarded update in this transaction already checked epoch and host.
  if (!opts.fenced) {
    const task = await trx
      .selectFrom("tasks")
      .select(["id", "lease_epoch", "host_id"])
      .where("id", "=", ref.id)
      .executeTakeFirst();
    if (!task) throw new KilnError("TASK_NOT_FOUND", `no task ${ref.id}`);
    if (task.lease_epoch !== ref.epoch) {
      throw new KilnError("LEASE_STALE", undefined, {
        taskId: ref.id,
        epoch: ref.epoch,
        current: task.lease_epoch,
      });
    }
    if (task.host_id !== ref.hostId) {
      throw new KilnError(
        task.host_id === null ? "LEASE_STALE" : "HOST_MISMATCH",
        `task ${ref.id} is not this host's`,
      );
    }
  }
  if (opts.fenced && chunk.offset === 0) {
    // The first chunk: one already there is this one replayed (a gap cannot start at 0).
    if (bytes > deps.engine.logLimitBytes) {
      throw new KilnError("LOG_TOO_LARGE", `the log would exceed ${deps.engine.logLimitBytes} bytes`, {
        size: 0,
      });
    }
    if (bytes > 0) {
      await trx
        .insertInto("task_logs")
        .values({ task_id: ref.id, epoch: ref.epoch, offset: 0, data: chunk.data })
        .onConflict((oc) => oc.columns(["task_id", "epoch", "offset"]).doNothing())
        .execute();
    }
    return { size: bytes };
  }
  const last = await trx
    .selectFrom("task_logs")
    .select(["offset", "data"])
    .where("task_id", "=", ref.id)
    .where("epoch", "=", ref.epoch)
    .orderBy("offset", "desc")
    .limit(1)
    .executeTakeFirst();
  const end = last ? last.offset + Buffer.byteLength(last.data, "utf8") : 0;
  if (chunk.offset < end) return { size: end }; // a replay
  if (chunk.offset > end) {
    throw new KilnError("LOG_GAP", `chunk at ${chunk.offset} but the log ends at ${end}`, { size: end });
  }
  if (end + bytes > deps.engine.logLimitBytes) {
    throw new KilnError("LOG_TOO_LARGE", `the log would exceed ${deps.engine.logLimitBytes} bytes`, {
      size: end,
    });
  }
  if (bytes === 0) return { size: end };
  await trx
    .insertInto("task_logs")
    .values({ task_id: ref.id, epoch: ref.epoch, offset: end, data: chunk.data })
    .execute();
  return { size: end + bytes };
}

/** Chunks of one attempt's log from a byte offset on. */
export async function readLog(
  deps: EngineDeps,
  taskId: number,
  epoch: number,
  fromOffset = 0,
): Promise<LogChunk[]> {
  const rows = await deps.db.kysely
    .selectFrom("task_logs")
    .select(["epoch", "offset", "data"])
    .where("task_id", "=", taskId)
    .where("epoch", "=", epoch)
    .where("offset", ">=", fromOffset)
    .orderBy("offset")
    .execute();
  return rows;
}

/** The attempts (epochs) that wrote a log, oldest first. */
export async function logEpochs(deps: EngineDeps, taskId: number): Promise<number[]> {
  const rows = await deps.db.kysely
    .selectFrom("task_logs")
    .select("epoch")
    .distinct()
    .where("task_id", "=", taskId)
    .orderBy("epoch")
    .execute();
  return rows.map((r) => r.epoch);
}
