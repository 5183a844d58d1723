import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { isErrorCode, KilnError } from "../errors/catalogue.js";
import type { RepoMethod } from "../publish/methods.js";
import { createTask } from "../tasks/create-task.js";
import { getTask } from "../tasks/task-queries.js";
import type { LockSpec, TaskError, TaskRow } from "../tasks/types.js";
import type { HubDeps } from "./deps.js";

export interface RepoTaskInput {
  method: RepoMethod;
  args: Record<string, unknown>;
  owner: string;
  locks: LockSpec[];
  priority?: number;
}

/** Queues a repository task; its locks put it in line behind conflicting work, never a 409. */
export async function queueRepoTask(deps: HubDeps, input: RepoTaskInput): Promise<TaskRow> {
  return createTask(deps, {
    method: input.method,
    args: input.args,
    owner: input.owner,
    locks: dedupeLocks(input.locks),
    ...(input.priority !== undefined ? { priority: input.priority } : {}),
  });
}

/** Two locks on one resource: exclusive wins. */
function dedupeLocks(locks: LockSpec[]): LockSpec[] {
  const by = new Map<string, LockSpec>();
  for (const l of locks) {
    const there = by.get(l.resource);
    by.set(l.resource, { resource: l.resource, exclusive: l.exclusive || (there?.exclusive ?? false) });
  }
  return [...by.values()];
}

/** The error a failed task ended with, as the error its caller would have got running it inline. */
export function taskErrorToKilnError(row: TaskRow): KilnError {
  if (row.state === "canceled")
    return new KilnError("TASK_CANCELED", `task ${row.id} was canceled`, { task: row.id });
  const err = row.error ? (JSON.parse(row.error) as TaskError) : undefined;
  if (err && isErrorCode(err.code))
    return new KilnError(err.code, err.message, { task: row.id, ...err.details });
  return new KilnError("TASK_FAILED", err ? `${err.code}: ${err.message}` : `task ${row.id} failed`, {
    task: row.id,
  });
}

/**
 * Waits until a task ends: its result when it closed, its error thrown otherwise. Woken by the
 * engine's wake-ups (and a slow timer for changes made by another hub process).
 */
export async function awaitTask(deps: HubDeps, id: number, signal?: AbortSignal): Promise<unknown> {
  for (;;) {
    const row = await getTask(deps, id);
    if (row.state === "closed") return row.result === null ? null : (JSON.parse(row.result) as unknown);
    if (row.state === "failed" || row.state === "canceled") throw taskErrorToKilnError(row);
    if (deps.lifecycle.closing)
      throw new KilnError("SHUTTING_DOWN", "the hub is shutting down; the task goes on");
    if (signal?.aborted) throw new KilnError("SHUTTING_DOWN", "the request ended; the task goes on");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, 250);
      const off = deps.wake.on(done);
      deps.lifecycle.onClose.add(done);
      function done() {
        clearTimeout(timer);
        off();
        deps.lifecycle.onClose.delete(done);
        resolve();
      }
    });
  }
}

/** The repository tasks still queued or running that hold a lock on `resource`. */
export async function pendingLockHolders(db: Kysely<Database>, resource: string): Promise<number[]> {
  const rows = await db
    .selectFrom("task_locks")
    .innerJoin("tasks", "tasks.id", "task_locks.task_id")
    .select("tasks.id")
    .where("task_locks.resource", "=", resource)
    .where("tasks.state", "in", ["free", "assigned", "open"])
    .execute();
  return rows.map((r) => r.id);
}
