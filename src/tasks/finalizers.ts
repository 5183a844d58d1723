import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { TaskRow } from "./types.js";

/**
 * Code that must run in the same transaction as a task of some method reaching a final state
 * (closed, failed, canceled) — e.g. a build task's build row follows it. Keeps the engine
 * unaware of what tasks mean.
 */
export type Finalizer = (trx: Kysely<Database>, task: TaskRow, now: number) => Promise<void>;

const FINALIZERS = new Map<string, Finalizer[]>();

export function registerFinalizer(method: string, fn: Finalizer): void {
  const list = FINALIZERS.get(method) ?? [];
  list.push(fn);
  FINALIZERS.set(method, list);
}

/** Whether tasks of `method` have finalizers (which may change what else can run). */
export function hasFinalizers(method: string): boolean {
  return FINALIZERS.has(method);
}

export async function runFinalizers(trx: Kysely<Database>, task: TaskRow, now: number): Promise<void> {
  for (const fn of FINALIZERS.get(task.method) ?? []) await fn(trx, task, now);
}
