/** Shapes of the native API (/api/v1) shared by the hub, the CLI, the worker and the web UI. */
export type { TaskJson, TaskError, TaskState, LockSpec } from "../tasks/types.js";
import type { TaskJson } from "../tasks/types.js";
import type { ChainReport } from "../builds/chain-report.js";

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
  /** Why it is disabled: a quarantine says so; null when enabled or disabled by hand. */
  disabledReason?: string | null;
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

// --- Builds, tags, targets (issue: builds) ---

export interface TagJson {
  id: number;
  name: string;
  /** Own arches; null means inherited (see `config.arches` on the detail). */
  arches: string[] | null;
  perm: string | null;
  locked: boolean;
  extra: Record<string, unknown>;
  createdAt: string;
}

export interface TagLinkJson {
  parent: string;
  parentId: number;
  priority: number;
  maxdepth: number | null;
  intransitive: boolean;
  noconfig: boolean;
  pkgFilter: string;
}

export interface TagWalkEntryJson {
  tag: string;
  tagId: number;
  child: string;
  depth: number;
  priority: number;
  filters: string[];
  noconfig: boolean;
  intransitive: boolean;
  maxdepthRemaining: number | null;
}

export interface TagDetailJson extends TagJson {
  parents: TagLinkJson[];
  walk: TagWalkEntryJson[];
  config: { arches: string[] | null; extra: Record<string, unknown> };
  /** The buildroot base builds in it use (`extra.buildroot`) and the tag that sets it; null: none. */
  buildroot?: { name: string; from: string } | null;
  event: number;
}

export interface PackageEntryJson {
  package: string;
  blocked: boolean;
  owner: string;
  /** The tag the entry comes from (the queried tag itself, or an ancestor). */
  tag: string;
  inherited: boolean;
}

export type BuildState = "building" | "complete" | "failed" | "canceled";

export interface ArtifactJson {
  id: number;
  name: string;
  sha256: string;
  size: number;
  /** deb, udeb, ddeb, buildinfo, changes, dsc, source (orig/debian tarballs, diff), log */
  kind: string;
  arch: string | null;
  taskId: number;
}

export interface BuildArchJson {
  arch: string;
  taskId: number;
  state: string;
}

export interface BuildJson {
  id: number;
  source: string;
  version: string;
  /** "source/version" */
  nvr: string;
  state: BuildState;
  owner: string;
  target: string | null;
  scratch: boolean;
  taskId: number | null;
  createdAt: string;
  completedAt: string | null;
  arches: BuildArchJson[];
  artifacts: ArtifactJson[];
  tags: string[];
  /** What the build ran in, when its build tag names a buildroot (null: the workers' host root). */
  buildroot: BuildBuildrootJson | null;
}

/** A build's buildroot: the base, the build tag's repo, and per arch the Build-Depends installed. */
export interface BuildBuildrootJson {
  name: string;
  sha256: string;
  tag: string;
  repoId: number;
  arches: Record<string, { installed: InstalledPackage[]; setupSeconds: number; base: string }>;
}

export interface TaggedBuildJson {
  buildId: number;
  source: string;
  version: string;
  nvr: string;
  tag: string;
  event: number;
  inherited: boolean;
}

export interface TargetJson {
  id: number;
  name: string;
  buildTag: string;
  destTag: string;
  /** The target's retry policy (`2 on exit:75`), or null when kiln.toml's default applies. */
  retry?: string | null;
}

export type TagRepoState = "init" | "ready" | "expired" | "deleted" | "failed";

/** A tag's internal APT repository (Koji's repo): its latest builds as of an event. */
export interface TagRepoJson {
  id: number;
  tag: string;
  state: TagRepoState;
  /** The newest event its contents reflect. */
  eventId: number;
  builds: { buildId: number; nvr: string }[];
  packageCount: number;
  createdAt: string;
  readyAt: string | null;
  expiredAt: string | null;
  deletedAt: string | null;
  /** URL path on the hub, `/repos/<tag>/<id>/`; apt takes it with distribution `kiln`, component `main`. */
  path: string;
  /** The newRepo task that made it. */
  taskId: number | null;
  /** Why making it failed (state `failed`). */
  error: string | null;
  /** Set on a newRepo result when nothing changed and no new repo was made. */
  unchanged?: boolean;
}

export interface CreateBuildRequest {
  target: string;
  /** An upload area made with POST /api/v1/uploads holding the source. */
  upload: string;
  /** `tarball`: a .tar.gz of a directory with debian/; `dsc`: a .dsc whose files are in the same upload. */
  source: { type: "tarball" | "dsc"; file: string };
  scratch?: boolean;
  priority?: number;
  archOverride?: string[];
  force?: boolean;
}

/** POST /api/v1/chain-builds: groups build in order, the builds of a group in parallel. */
export interface CreateChainBuildRequest {
  target: string;
  /** Each source as POST /api/v1/builds takes it: an upload area and the file in it. */
  groups: { upload: string; source: CreateBuildRequest["source"] }[][];
  priority?: number;
  force?: boolean;
}

export type { ChainEntryJson, ChainEntryState, ChainRepoWaitJson } from "../builds/chain-report.js";

/** A chain build: its `chainBuild` task, its target, and where each of its builds stands. */
export interface ChainBuildJson extends ChainReport {
  task: TaskJson;
  target: string;
  buildTag: string;
  destTag: string;
}

/** Args of the worker methods (what buildSrc/buildArch handlers receive as task.args). */
export interface BuildSrcArgs {
  buildId: number;
  upload: string;
  source: { type: "tarball" | "dsc"; file: string };
}

export interface SourceFileRef {
  name: string;
  sha256: string;
  size: number;
}

export interface BuildSrcResult {
  source: string;
  version: string;
  /** The package's Architecture field values from debian/control binaries (e.g. ["any", "all"]). */
  architectures: string[];
  dsc: SourceFileRef;
  /** Every file of the source package, the .dsc included. */
  files: SourceFileRef[];
}

export interface BuildArchArgs {
  buildId: number;
  source: string;
  version: string;
  arch: string;
  /** Build the arch-independent (Architecture: all) binaries in this task. */
  indep: boolean;
  /** Build the arch-dependent binaries in this task. */
  dep: boolean;
  dsc: SourceFileRef;
  files: SourceFileRef[];
  /** Build in a fresh root from this base, installing Build-Depends from its mirror and `repo`. */
  buildroot?: BuildrootRef;
}

/** What a buildArch in a buildroot needs: the base (by content) and the build tag's repo. */
export interface BuildrootRef {
  name: string;
  sha256: string;
  size: number;
  /** The build tag's repo (Koji's kojira repo) to install Build-Depends from. */
  repo: { id: number; tag: string; path: string };
}

/** A package the buildroot had installed for the build, as a .buildinfo lists them. */
export interface InstalledPackage {
  package: string;
  version: string;
  arch: string;
}

export interface BuildArchResult {
  artifacts: { name: string; sha256: string; size: number; kind: string }[];
  /** Present when the build ran in a buildroot. */
  buildroot?: {
    name: string;
    sha256: string;
    repoId: number;
    /** Packages apt installed for the Build-Depends (name, version, arch), sorted. */
    installed: InstalledPackage[];
    /** Seconds from claiming the base to a root ready to build in. */
    setupSeconds: number;
    /** How the base was found: in the worker's cache, checked again, or downloaded. */
    base: "cached" | "verified" | "fetched";
  };
}

// --- Buildroot bases ---

export type BuildrootState = "building" | "ready" | "failed" | "deleted";

/** What a base holds, as the createBuildroot task reports it. */
export interface BuildrootInfoJson {
  /** How many packages dpkg has installed in it. */
  packages: number;
  /** The versions of debootstrap that made it and of apt inside it. */
  debootstrap: string;
  apt: string;
  /** Every installed package as "name=version". */
  installed: string[];
}

/** A buildroot base: a debootstrap tree stored as a tarball in the blob store. */
export interface BuildrootJson {
  id: number;
  name: string;
  suite: string;
  mirror: string;
  arch: string;
  /** Packages included beyond build-essential and fakeroot (always there). */
  include: string[];
  state: BuildrootState;
  /** The tarball's content address, once ready. */
  sha256: string | null;
  size: number | null;
  info: BuildrootInfoJson | null;
  /** The createBuildroot task that made (or makes) it. */
  taskId: number | null;
  /** Why making it failed. */
  error: string | null;
  owner: string;
  createdAt: string;
  readyAt: string | null;
  deletedAt: string | null;
}

/** GET /api/v1/buildroots/:name: the base and the tags whose builds use it. */
export interface BuildrootDetailJson extends BuildrootJson {
  /** Every tag whose build config names it; `from` is the tag that sets it (itself, or an ancestor). */
  tags: { tag: string; from: string }[];
}

/** POST /api/v1/buildroots. */
export interface CreateBuildrootRequest {
  name: string;
  suite: string;
  mirror: string;
  /** Default: the hub's own dpkg architecture. */
  arch?: string;
  include?: string[];
}

/** Args of a `createBuildroot` task (channel `buildroot`, arch = the base's). */
export interface CreateBuildrootTaskArgs {
  buildrootId: number;
  name: string;
  suite: string;
  mirror: string;
  arch: string;
  include: string[];
}

/**
 * What a `createBuildroot` task closes with, after uploading one artifact of kind `buildroot`
 * (`<name>.tar.zst`) with this sha256 and size.
 */
export interface CreateBuildrootTaskResult {
  sha256: string;
  size: number;
  info: BuildrootInfoJson;
}

// --- The archive signing key ---

export interface ArchiveKeyJson {
  fingerprint: string;
  uid: string;
  /** As gpg names it: `ed25519`, `rsa4096`… */
  algorithm: string;
  /** When the key was made (ISO 8601). */
  created: string;
  /** The armored public key; apt gets the same at /apt/kiln-archive-keyring.asc. */
  publicKey: string;
}

// --- Repositories and publishing (the hub's JSON shapes, defined beside the code that makes them) ---
import type { RepoJson } from "../publish/repo-store.js";
import type { SnapshotJson, SnapshotDiffEntry } from "../publish/snapshot-store.js";
import type { PublicationJson, GenerationJson, PublicationSpec } from "../publish/publication-store.js";
import type { PublishOutcome } from "../publish/publish-ops.js";
import type { FileReport, RepoAddResult, SnapshotSource } from "../publish/repo-ops.js";
import type { PackageJson } from "../hub/routes/v1/repos.js";
import type { BuildPublicationJson } from "../publish/build-publications.js";

export type {
  RepoJson,
  SnapshotJson,
  PublicationJson,
  GenerationJson,
  PackageJson,
  BuildPublicationJson,
  FileReport,
  SnapshotDiffEntry as SnapshotDiffJson,
  PublicationSpec as PublicationSpecJson,
  PublishOutcome as PublishOutcomeJson,
  RepoAddResult as RepoAddResultJson,
  SnapshotSource as SnapshotSourceJson,
};

export interface RepoDetailJson extends RepoJson {
  packages?: PackageJson[];
}
export interface SnapshotDetailJson extends SnapshotJson {
  packages?: PackageJson[];
}
export type RepoTaskAnswer<R> = { task: TaskJson; result: R } | { task: TaskJson; result?: undefined };

/** Percentiles of a duration, in seconds; null when nothing was measured. */
export interface DurationStatsJson {
  count: number;
  p50: number | null;
  p95: number | null;
}

/** `GET /api/v1/stats`: the build-health view over a window. */
export interface StatsJson {
  since: string;
  until: string;
  builds: {
    total: number;
    complete: number;
    failed: number;
    canceled: number;
    building: number;
    /** complete / (complete + failed); null when none ended. */
    successRate: number | null;
  };
  /** From a build step's creation to its first start. */
  queueWait: DurationStatsJson;
  /** A complete build, from submission to import. */
  buildTime: DurationStatsJson;
  slowest: { package: string; builds: number; p50: number; max: number }[];
  /** Packages whose build steps failed and then passed on retry. */
  flakiest: { package: string; flakySteps: number; retries: number }[];
  hostFailures: { host: string; failures: number; infra: number }[];
}

/** One attempt of a build's step, as `kiln build-info` lists them. */
export interface BuildAttemptJson {
  taskId: number;
  method: string;
  arch: string | null;
  attempt: number;
  host: string | null;
  outcome: string;
  errorCode: string | null;
  exitCode: number | null;
  signal: string | null;
  startedAt: string | null;
  /** Seconds; null while it runs. */
  duration: number | null;
}
