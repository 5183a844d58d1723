/** Shapes of the native API (/api/v1) shared by the hub, the CLI, the worker and the web UI. */
export type { TaskJson, TaskError, TaskState, LockSpec } from "../tasks/types.js";
import type { TaskJson } from "../tasks/types.js";

export interface TaskDetailJson extends TaskJson {
  /** For a free task: why it is not running yet. */
  why: string | null;
  host: string | null;
  locks: { resource: string; exclusive: boolean }[];
  subtasks: number[];
}

export interface HostJson {
  id: number;
  name: string;
  arches: string[];
  channels: string[];
  capacity: number;
  load: number;
  enabled: boolean;
  ready: boolean;
  description: string | null;
  reported: Record<string, unknown> | null;
  lastSeenAt: string | null;
  createdAt: string;
}

export interface TokenJson {
  id: number;
  user: string | null;
  host: string | null;
  role: "admin" | "user" | "host";
  description: string | null;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

export interface WhoAmI {
  role: "admin" | "user" | "host";
  user: string | null;
  host: string | null;
}

export interface CreateTaskRequest {
  method: string;
  args?: unknown;
  priority?: number;
  arch?: string;
  channel?: string;
  weight?: number;
  timeout?: number;
  locks?: { resource: string; exclusive?: boolean }[];
}

/** A task as a worker gets it from a claim: the task plus the lease epoch to quote back. */
export interface ClaimedTask {
  task: TaskJson;
  epoch: number;
}

export type LeaseStatus = "ok" | "stale" | "canceled" | "timeout" | "finished";

export interface HelloRequest {
  /** Tasks the worker is still running (empty after a restart: the hub requeues the rest). */
  running: { id: number; epoch: number }[];
  capabilities: string[];
  version: string;
  arches?: string[];
}
