import type { Selectable } from "kysely";
import type { TasksTable } from "../db/schema.js";

export const TASK_STATES = ["free", "assigned", "open", "closed", "failed", "canceled"] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const ACTIVE_STATES: readonly TaskState[] = ["free", "assigned", "open"];
export const RUNNING_STATES: readonly TaskState[] = ["assigned", "open"];
export const FINAL_STATES: readonly TaskState[] = ["closed", "failed", "canceled"];

export type TaskRow = Selectable<TasksTable>;

export interface TaskError {
  code: string;
  message: string;
  /** Lost host, lease expiry, worker crash: retried automatically. */
  infra?: boolean;
  exitCode?: number | null;
  signal?: string | null;
  details?: Record<string, unknown>;
}

export interface LockSpec {
  resource: string;
  exclusive: boolean;
}

/** The task as the API shows it. */
export interface TaskJson {
  id: number;
  method: string;
  args: unknown;
  state: TaskState;
  waiting: boolean;
  priority: number;
  arch: string;
  channel: string;
  weight: number;
  parentId: number | null;
  label: string | null;
  hostId: number | null;
  owner: string;
  attempts: number;
  infraFailures: number;
  leaseEpoch: number;
  timeout: number;
  runAt: string;
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  result: unknown;
  error: TaskError | null;
}

export function isFinal(state: string): boolean {
  return (FINAL_STATES as readonly string[]).includes(state);
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function parseJson(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

export function toTaskJson(row: TaskRow): TaskJson {
  return {
    id: row.id,
    method: row.method,
    args: parseJson(row.args),
    state: row.state as TaskState,
    waiting: row.waiting === 1,
    priority: row.priority,
    arch: row.arch,
    channel: row.channel,
    weight: row.weight,
    parentId: row.parent_id,
    label: row.label,
    hostId: row.host_id,
    owner: row.owner,
    attempts: row.attempts,
    infraFailures: row.infra_failures,
    leaseEpoch: row.lease_epoch,
    timeout: row.timeout_s,
    runAt: new Date(row.run_at).toISOString(),
    createdAt: new Date(row.created_at).toISOString(),
    startedAt: iso(row.started_at),
    completedAt: iso(row.completed_at),
    result: parseJson(row.result),
    error: parseJson(row.error) as TaskError | null,
  };
}
