import { sql, type Kysely } from "kysely";
import { lockResource } from "../db/advisory.js";
import { withWriteTx } from "../db/database.js";
import type { Database } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import type { EngineDeps } from "./deps.js";
import { nextFairVt, URGENT_PRIORITY } from "./fair-order.js";
import { getMethod } from "./methods.js";
import type { LockSpec, TaskRow } from "./types.js";
import type { WakeHint } from "./wake.js";

export interface CreateTaskInput {
  method: string;
  args?: unknown;
  owner: string;
  parentId?: number | null;
  label?: string | null;
  priority?: number;
  arch?: string;
  channel?: string;
  weight?: number;
  /** Seconds; defaults per method from the engine config. */
  timeout?: number;
  locks?: LockSpec[];
}

export const DEFAULT_PRIORITY = 20;
const ARCH_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const CHANNEL_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._:+~/@-]{0,199}$/;
export const RESOURCE_RE = /^[A-Za-z0-9][A-Za-z0-9._:+~/@-]{0,254}$/;

export function validatePriority(priority: unknown): number {
  if (typeof priority !== "number" || !Number.isInteger(priority) || priority < 0 || priority > 100) {
    throw new KilnError(
      "INVALID_PRIORITY",
      `priority must be an integer from 0 to 100, not ${String(priority)}`,
    );
  }
  return priority;
}

/** Parses `NAME` or `NAME:shared` / `NAME:exclusive` as the CLI's --lock takes it. */
export function parseLock(text: string): LockSpec {
  const m = /^(.*?)(?::(shared|exclusive))?$/.exec(text);
  const resource = m?.[1] ?? "";
  if (!RESOURCE_RE.test(resource)) {
    throw new KilnError("INVALID_LOCK", `lock "${text}" is not NAME or NAME:shared`);
  }
  return { resource, exclusive: m?.[2] !== "shared" };
}

function normalize(deps: EngineDeps, input: CreateTaskInput) {
  const spec = getMethod(input.method);
  const args = spec.validateArgs(input.args);
  const priority = validatePriority(input.priority ?? DEFAULT_PRIORITY);
  const arch = input.arch ?? spec.arch;
  if (!ARCH_RE.test(arch))
    throw new KilnError("VALIDATION_FAILED", `arch "${arch}" is not a Debian arch name`);
  const channel = input.channel ?? spec.channel;
  if (!CHANNEL_RE.test(channel))
    throw new KilnError("VALIDATION_FAILED", `channel "${channel}" is not valid`);
  const weight = input.weight ?? spec.weight;
  if (typeof weight !== "number" || !(weight > 0 && weight <= 1000)) {
    throw new KilnError("VALIDATION_FAILED", "weight must be a number above 0 and at most 1000");
  }
  const timeout = input.timeout ?? deps.engine.timeouts[input.method] ?? deps.engine.timeouts.default ?? 7200;
  if (!Number.isInteger(timeout) || timeout <= 0) {
    throw new KilnError("VALIDATION_FAILED", "timeout must be a positive whole number of seconds");
  }
  if (input.label != null && !LABEL_RE.test(input.label)) {
    throw new KilnError("VALIDATION_FAILED", `label "${input.label}" is not valid`);
  }
  const locks = input.locks ?? [];
  for (const lock of locks) {
    if (!RESOURCE_RE.test(lock.resource)) {
      throw new KilnError("INVALID_LOCK", `lock resource "${lock.resource}" is not valid`);
    }
  }
  return { args, priority, arch, channel, weight, timeout, locks };
}

/**
 * Inserts one task, inside an open write transaction when it has a label or locks; the caller
 * commits and wakes.
 */
export async function insertTask(
  deps: EngineDeps,
  trx: Kysely<Database>,
  input: CreateTaskInput,
): Promise<{ row: TaskRow; created: boolean }> {
  const n = normalize(deps, input);
  if (input.parentId != null && input.label != null) {
    const existing = await trx
      .selectFrom("tasks")
      .selectAll()
      .where("parent_id", "=", input.parentId)
      .where("label", "=", input.label)
      .executeTakeFirst();
    if (existing) return { row: existing, created: false };
  }
  let vt = 0;
  if (n.priority <= URGENT_PRIORITY) {
    // The queue's head and this owner's last waiting task, in one statement.
    const { rows } = await sql<{ head: number | null; last: number | null }>`
      SELECT
        (SELECT MIN(fair_vt) FROM tasks WHERE state = 'free' AND priority = ${n.priority}) AS head,
        (SELECT MAX(fair_vt) FROM tasks
          WHERE state = 'free' AND owner = ${input.owner} AND priority = ${n.priority}) AS last`.execute(trx);
    const head = rows[0]?.head;
    const last = rows[0]?.last;
    vt = nextFairVt(head ?? null, last ?? null);
  }
  const now = deps.clock.now();
  const row = await trx
    .insertInto("tasks")
    .values({
      method: input.method,
      args: JSON.stringify(n.args),
      owner: input.owner,
      parent_id: input.parentId ?? null,
      label: input.label ?? null,
      state: "free",
      waiting: 0,
      priority: n.priority,
      fair_vt: vt,
      arch: n.arch,
      channel: n.channel,
      weight: n.weight,
      host_id: null,
      lease_epoch: 0,
      lease_expires_at: null,
      attempts: 0,
      infra_failures: 0,
      run_at: now,
      timeout_s: n.timeout,
      locks: n.locks.length > 0 ? JSON.stringify(n.locks) : null,
      result: null,
      error: null,
      created_at: now,
      started_at: null,
      claimed_at: null,
      completed_at: null,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await insertLocks(trx, row.id, n.locks, deps.db.dialect);
  return { row, created: true };
}

/** Takes a task's declared locks; they must be the ones in its `locks` column (afterFinal relies on it). */
export async function insertLocks(
  trx: Kysely<Database>,
  taskId: number,
  locks: LockSpec[],
  dialect: "sqlite" | "postgres",
): Promise<void> {
  if (locks.length === 0) return;
  if (dialect === "postgres") {
    // Lock rows queue by id, and a sequence hands ids out at insert, not at commit: serialize
    // the inserting transactions per resource (in one order, so they cannot deadlock) so that
    // a lower id always means committed earlier. SQLite's writer lock already does that.
    for (const resource of [...new Set(locks.map((l) => l.resource))].sort()) {
      await lockResource(trx, resource);
    }
  }
  await trx
    .insertInto("task_locks")
    .values(locks.map((l) => ({ task_id: taskId, resource: l.resource, exclusive: l.exclusive ? 1 : 0 })))
    .execute();
}

/** The wake-up for tasks just queued: only hosts that can run them need to look. */
export function queuedHint(rows: TaskRow[]): WakeHint {
  return { kind: "tasks", tasks: rows.map((r) => ({ arch: r.arch, channel: r.channel })) };
}

export async function createTask(deps: EngineDeps, input: CreateTaskInput): Promise<TaskRow> {
  // Without a label to look up or locks to take, the insert is the only write: no transaction
  // around it is needed (at worst two tasks read the same fair-order head and tie, and id orders
  // them), which spares the commonest submission two statements. For the same reason there is no
  // task.created event: with it, PostgreSQL spent about a fifth more CPU per task (bench/).
  const single = input.label == null && (input.locks === undefined || input.locks.length === 0);
  const { row } = single
    ? await insertTask(deps, deps.db.kysely, input)
    : await withWriteTx(deps.db, (trx) => insertTask(deps, trx, input));
  deps.wake.notify(queuedHint([row]));
  return row;
}

/** Many tasks in one transaction (bulk submission). */
export async function createTasks(deps: EngineDeps, inputs: CreateTaskInput[]): Promise<TaskRow[]> {
  const rows = await withWriteTx(deps.db, async (trx) => {
    const out: TaskRow[] = [];
    for (const input of inputs) out.push((await insertTask(deps, trx, input)).row);
    return out;
  });
  deps.wake.notify(queuedHint(rows));
  return rows;
}
