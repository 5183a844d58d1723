import type { Logger } from "pino";
import type { KilnClient } from "../client/client.js";
import type { TaskJson } from "../client/types.js";

/** A failure a handler reports; `infra` ones are retried by the hub automatically. */
export class TaskFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly opts: { infra?: boolean; exitCode?: number | null; signal?: string | null } = {},
  ) {
    super(message);
    this.name = "TaskFailure";
  }
}

export interface TaskContext {
  task: TaskJson;
  epoch: number;
  /** Aborted when the task is canceled, times out, loses its lease, or the worker stops hard. */
  signal: AbortSignal;
  /** Appends to the task's log (streamed to the hub in chunks). */
  log(text: string): void;
  /**
   * A fresh directory for this attempt, removed afterwards. Made when first read (the worker
   * gives a getter), so tasks that never need one cost no file system work.
   */
  readonly workDir: string;
  client: KilnClient;
  logger: Logger;
  /** Seconds between SIGTERM and SIGKILL when a job is stopped. */
  killGrace: number;
}

/**
 * `suspend`: the handler asked the hub to wait for its subtasks (waitSubtasks said not done);
 * the task is no longer this worker's and runs again from the top when they finish.
 */
export type HandlerResult = { result: unknown } | { suspend: true };

export type TaskHandler = (ctx: TaskContext) => Promise<HandlerResult>;

export type HandlerMap = Map<string, TaskHandler>;
