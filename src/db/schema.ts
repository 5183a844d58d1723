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
  /** Why the host is disabled (a quarantine says so); null when enabled or disabled by hand. */
  disabled_reason: Generated<string | null>;
  enabled_at: Generated<number | null>;
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
  /** Build failures retried under the target's retry policy (infra failures count apart). */
  retries: Generated<number>;
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

export interface EventsTable {
  id: Generated<number>;
  type: string;
  actor: string | null;
  data: string;
  created_at: number;
}

export interface WebhooksTable {
  id: Generated<number>;
  url: string;
  /** JSON array of event type patterns (`build.failed`, `build.*`). */
  events: string;
  secret: string | null;
  format: string;
  description: string | null;
  enabled: number;
  disabled_reason: string | null;
  /** The last event id fanned out into deliveries. */
  cursor: number;
  lease_owner: string | null;
  lease_until: number | null;
  created_by: string | null;
  created_at: number;
  updated_at: number;
}

export interface WebhookDeliveriesTable {
  id: Generated<number>;
  uuid: string;
  webhook_id: number;
  event_id: number;
  event_type: string;
  /** pending | delivered | failed (given up) */
  state: string;
  attempts: number;
  next_attempt_at: number;
  created_at: number;
  completed_at: number | null;
}

export interface WebhookAttemptsTable {
  id: Generated<number>;
  delivery_id: number;
  attempt: number;
  started_at: number;
  duration_ms: number;
  status: number | null;
  error: string | null;
  response: string | null;
}

export interface TagsTable {
  id: Generated<number>;
  name: string;
  arches: string | null;
  perm: string | null;
  locked: number;
  extra: string;
  created_at: number;
}

export interface TagInheritanceTable {
  id: Generated<number>;
  tag_id: number;
  parent_id: number;
  priority: number;
  maxdepth: number | null;
  intransitive: number;
  noconfig: number;
  pkg_filter: string;
  create_event: number;
  revoke_event: number | null;
}

export interface TagPackagesTable {
  id: Generated<number>;
  tag_id: number;
  package: string;
  owner: string | null;
  blocked: number;
  create_event: number;
  revoke_event: number | null;
}

export interface TargetsTable {
  id: Generated<number>;
  name: string;
  build_tag_id: number;
  dest_tag_id: number;
  created_at: number;
  /** The retry policy's text (see builds/retry-policy.ts); null: kiln.toml's default. */
  retry_policy: Generated<string | null>;
}

export interface BuildsTable {
  id: Generated<number>;
  source: string;
  version: string;
  state: string;
  owner: string;
  target_id: number | null;
  scratch: number;
  task_id: number | null;
  created_at: number;
  completed_at: number | null;
  /** The tag repo the build installs its Build-Depends from (null: built on the host root). */
  tag_repo_id: Generated<number | null>;
  /** JSON BuildrootRecord: the base and, per arch, the resolved Build-Depends. */
  buildroot: Generated<string | null>;
}

export interface BuildrootsTable {
  id: Generated<number>;
  name: string;
  suite: string;
  mirror: string;
  arch: string;
  /** JSON list of packages debootstrap includes beyond build-essential and fakeroot. */
  include: string;
  /** building | ready | failed | deleted */
  state: string;
  sha256: string | null;
  size: number | null;
  /** JSON: what the base holds. */
  info: string | null;
  task_id: number | null;
  error: string | null;
  owner: string;
  created_at: number;
  ready_at: number | null;
  deleted_at: number | null;
}

export interface TagReposTable {
  id: Generated<number>;
  tag_id: number;
  /** init | ready | expired | deleted | failed */
  state: string;
  event_id: number;
  /** JSON [{buildId, nvr}] */
  builds: string;
  package_count: Generated<number>;
  task_id: number | null;
  error: string | null;
  created_at: number;
  ready_at: number | null;
  expired_at: number | null;
  deleted_at: number | null;
}

export interface BuildTagsTable {
  id: Generated<number>;
  tag_id: number;
  build_id: number;
  actor: string | null;
  create_event: number;
  revoke_event: number | null;
}

export interface ArtifactsTable {
  id: Generated<number>;
  task_id: number;
  epoch: number;
  build_id: number | null;
  name: string;
  sha256: string;
  size: number;
  kind: string;
  arch: string | null;
  created_at: number;
}

export interface UserPermsTable {
  user_id: number;
  perm: string;
}

export interface PackagesTable {
  id: Generated<number>;
  /** Aptly's package key: `P<arch> <name> <version> <files hash>`. */
  key: string;
  name: string;
  version: string;
  /** The binary architecture, or `source` for a .dsc. */
  arch: string;
  /** deb | udeb | dsc */
  kind: string;
  source: string;
  /** The main file's (.deb, .dsc) sha256: finds the package of a build artifact. */
  sha256: string;
  /** The control paragraph (a .deb's control file, a .dsc's paragraph), unarmored. */
  control: string;
  /** JSON: PackageFile[] — the files, the main one first. */
  files: string;
  created_at: number;
}

export interface ReposTable {
  id: Generated<number>;
  name: string;
  comment: string;
  distribution: string;
  component: string;
  created_at: number;
}

export interface RepoPackagesTable {
  repo_id: number;
  package_id: number;
}

export interface SnapshotsTable {
  id: Generated<number>;
  name: string;
  description: string;
  /** JSON: where the snapshot came from (repo, tag at an event, merge, filter). */
  origin: string;
  created_at: number;
}

export interface SnapshotPackagesTable {
  snapshot_id: number;
  package_id: number;
}

export interface PublicationsTable {
  id: Generated<number>;
  prefix: string;
  distribution: string;
  /** local | snapshot | tag */
  source_kind: string;
  /** JSON: { component, name }[] */
  sources: string;
  /** JSON: string[]; empty means every architecture the contents have. */
  architectures: string;
  origin: string;
  label: string;
  skip_signing: number;
  live_generation: number | null;
  next_generation: number;
  created_at: number;
  updated_at: number;
}

export interface PublicationGenerationsTable {
  id: Generated<number>;
  publication_id: number;
  generation: number;
  /** staged | live | retired | failed | removed */
  state: string;
  /** JSON: what the generation was made from (snapshot names, tag event…). */
  sources: string;
  package_count: number;
  release_sha256: string | null;
  task_id: number | null;
  error: string | null;
  created_at: number;
  live_at: number | null;
}

/** One attempt of a task: a claim (epoch) and how it ended. */
export interface TaskAttemptsTable {
  id: Generated<number>;
  task_id: number;
  epoch: number;
  host_id: number | null;
  /** closed | failed | retried | requeued | timeout */
  outcome: string;
  infra: number;
  error_code: string | null;
  exit_code: number | null;
  signal: string | null;
  started_at: number | null;
  ended_at: number;
}

export interface Database {
  task_attempts: TaskAttemptsTable;
  packages: PackagesTable;
  repos: ReposTable;
  repo_packages: RepoPackagesTable;
  snapshots: SnapshotsTable;
  snapshot_packages: SnapshotPackagesTable;
  publications: PublicationsTable;
  publication_generations: PublicationGenerationsTable;
  events: EventsTable;
  webhooks: WebhooksTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
  tags: TagsTable;
  tag_inheritance: TagInheritanceTable;
  tag_packages: TagPackagesTable;
  targets: TargetsTable;
  builds: BuildsTable;
  buildroots: BuildrootsTable;
  tag_repos: TagReposTable;
  build_tags: BuildTagsTable;
  artifacts: ArtifactsTable;
  user_perms: UserPermsTable;
  users: UsersTable;
  tokens: TokensTable;
  hosts: HostsTable;
  tasks: TasksTable;
  task_locks: TaskLocksTable;
  task_logs: TaskLogsTable;
}
