import type { Generated } from "kysely";

/** Timestamps are milliseconds since the epoch, from the hub's clock. JSON columns hold text. */
export interface UsersTable {
  id: Generated<number>;
  name: string;
  role: string;
  created_at: number;
}

export interface TokensTable {
  id: Generated<number>;
  user_id: number | null;
  host_id: number | null;
  role: string;
  description: string | null;
  token_hash: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

export interface HostsTable {
  id: Generated<number>;
  name: string;
  arches: string;
  channels: string;
  capacity: number;
  enabled: number;
  ready: number;
  description: string | null;
  reported: string | null;
  last_seen_at: number | null;
  created_at: number;
}

export interface TasksTable {
  id: Generated<number>;
  method: string;
  args: string;
  owner: string;
  parent_id: number | null;
  label: string | null;
  state: string;
  waiting: number;
  priority: number;
  fair_vt: number;
  arch: string;
  channel: string;
  weight: number;
  host_id: number | null;
  lease_epoch: number;
  lease_expires_at: number | null;
  attempts: number;
  infra_failures: number;
  run_at: number;
  timeout_s: number;
  locks: string | null;
  result: string | null;
  error: string | null;
  created_at: number;
  started_at: number | null;
  claimed_at: number | null;
  completed_at: number | null;
  updated_at: number;
}

export interface TaskLocksTable {
  id: Generated<number>;
  task_id: number;
  resource: string;
  exclusive: number;
}

export interface TaskLogsTable {
  task_id: number;
  epoch: number;
  offset: number;
  data: string;
}

export interface Database {
  users: UsersTable;
  tokens: TokensTable;
  hosts: HostsTable;
  tasks: TasksTable;
  task_locks: TaskLocksTable;
  task_logs: TaskLogsTable;
}
