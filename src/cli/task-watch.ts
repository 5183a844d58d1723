/** Waiting for tasks to finish, showing their states live. */
import { setTimeout as sleep } from "node:timers/promises";
import type { KilnClient } from "../client/client.js";
import type { TaskDetailJson, TaskJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { TASK_STATES, isFinal } from "../tasks/types.js";
import { formatDuration, Spinner } from "./output.js";

export interface WatchResult {
  /** The watched tasks as they finished, in the order asked for. */
  tasks: TaskDetailJson[];
  /** Every watched task closed. */
  ok: boolean;
}

/** A hub restart or a proxy hiccup: keep watching; anything else ends the watch. */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof KilnError)) return false;
  if (err.code === "HUB_UNREACHABLE" || err.code === "SHUTTING_DOWN") return true;
  const status = err.details?.status;
  return typeof status === "number" && status >= 502 && status <= 504;
}

function countStates(tasks: readonly TaskJson[]): string {
  return TASK_STATES.map((state) => [state, tasks.filter((t) => t.state === state).length] as const)
    .filter(([, n]) => n > 0)
    .map(([state, n]) => `${n} ${state}`)
    .join(", ");
}

/** "waiting: <why>", unless the hub's explanation already starts with "waiting". */
export function waitingLine(why: string): string {
  return /^waiting\b/i.test(why) ? why : `waiting: ${why}`;
}

/** One task's state in a few words: `12 sleep open on host-a [subtasks: 2 closed, 1 open]`. */
export function describeTask(task: TaskDetailJson, subtasks: readonly TaskJson[] = []): string {
  let text = `${task.id} ${task.method} ${task.state}`;
  if (task.state === "free" && task.why) text += ` (${waitingLine(task.why)})`;
  else if (task.waiting) text += " (waiting for subtasks)";
  else if ((task.state === "assigned" || task.state === "open") && task.host) text += ` on ${task.host}`;
  if (subtasks.length > 0) text += ` [subtasks: ${countStates(subtasks)}]`;
  return text;
}

function ranFor(task: TaskJson): string {
  const start = task.startedAt ?? task.createdAt;
  if (!task.completedAt) return "";
  return ` in ${formatDuration((new Date(task.completedAt).getTime() - new Date(start).getTime()) / 1000)}`;
}

function describeError(task: TaskJson): string {
  if (!task.error) return task.state;
  const extra = [
    task.error.exitCode !== undefined && task.error.exitCode !== null
      ? `exit code ${task.error.exitCode}`
      : "",
    task.error.signal ? `signal ${task.error.signal}` : "",
  ].filter(Boolean);
  return `${task.state}: ${task.error.message} [${task.error.code}]${extra.length ? ` (${extra.join(", ")})` : ""}`;
}

/**
 * Polls the tasks (and their subtasks) until all are final. The states show on a spinner on
 * stderr; at the end each task's outcome goes to stdout, and failures with their errors to stderr.
 */
export async function watchTasks(
  client: KilnClient,
  ids: readonly number[],
  opts: { intervalMs?: number; quiet?: boolean; spinner?: Spinner } = {},
): Promise<WatchResult> {
  const spinner = opts.spinner ?? new Spinner();
  const interval = opts.intervalMs ?? 500;
  let tasks: TaskDetailJson[] = [];
  const subtasks = new Map<number, TaskJson[]>();
  try {
    for (;;) {
      try {
        tasks = await Promise.all(ids.map((id) => client.getTask(id)));
        await Promise.all(
          tasks
            .filter((t) => t.subtasks.length > 0)
            .map(async (t) => {
              const page = await client.listTasks({ parent: t.id, limit: 1000 });
              subtasks.set(t.id, page.tasks);
            }),
        );
      } catch (err) {
        if (!isTransient(err) || tasks.length === 0) throw err;
        spinner.update(`lost the hub (${(err as Error).message}); still trying…`);
        await sleep(interval * 2);
        continue;
      }
      const text = tasks.map((t) => describeTask(t, subtasks.get(t.id))).join(" · ");
      spinner.update(tasks.length === 1 ? `task ${text}` : `tasks ${text}`);
      if (tasks.every((t) => isFinal(t.state))) break;
      await sleep(interval);
    }
  } finally {
    spinner.stop();
  }

  if (!opts.quiet) {
    for (const task of tasks) {
      if (task.state === "closed") {
        process.stdout.write(`task ${task.id} (${task.method}) closed${ranFor(task)}\n`);
        continue;
      }
      process.stderr.write(`task ${task.id} (${task.method}) ${describeError(task)}\n`);
      const failed = (subtasks.get(task.id) ?? []).filter((s) => s.state === "failed");
      for (const sub of failed.slice(0, 10)) {
        process.stderr.write(`  subtask ${sub.id} (${sub.method}) ${describeError(sub)}\n`);
      }
      if (failed.length > 10) process.stderr.write(`  … and ${failed.length - 10} more failed subtasks\n`);
      process.stderr.write(`  see its log: kiln task logs ${task.id}\n`);
    }
  }
  return { tasks, ok: tasks.every((t) => t.state === "closed") };
}
