/**
 * Tag repositories (Koji's repos, kept by kojira): each build tag has an internal APT repository
 * of its latest builds through inheritance, as of an event, that workers install Build-Depends
 * from. A repo is `init` while it is written, then `ready`; the ready one it replaces becomes
 * `expired` in the same transaction, and is `deleted` (files removed) once no running build
 * installs from it. A generation that fails is `failed` and leaves the ready repo alone.
 *
 * This module holds the rows, the queueing and the cleanup; tag-repo-generate.ts writes a repo.
 */
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { sql, type Kysely, type Selectable } from "kysely";
import type { BlobStore } from "../artifacts/blob-store.js";
import type { TagRepoJson, TagRepoState } from "../client/types.js";
import { lockResource } from "../db/advisory.js";
import { withWriteTx } from "../db/database.js";
import type { Database, TagReposTable } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import { recordEvent } from "../events/outbox.js";
import { removeDistribution, type PublishDirs, type Signer } from "../publish/apply-publication.js";
import { insertTask, queuedHint } from "../tasks/create-task.js";
import type { EngineDeps } from "../tasks/deps.js";
import { getTask } from "../tasks/task-queries.js";
import type { LockSpec, TaskError, TaskRow } from "../tasks/types.js";
import { TAG_REPO_DIST, tagRepoPath } from "./tag-repo-layout.js";
import { getTagRow } from "./tag-store.js";

export type { TagRepoJson, TagRepoState } from "../client/types.js";
export {
  repoHasBuilds,
  TAG_REPO_COMPONENT,
  TAG_REPO_DIST,
  TAG_REPOS_URL,
  tagRepoPath,
  tagRepoSourcesLine,
} from "./tag-repo-layout.js";

/** What tag repos need of the hub; HubDeps has all of it. */
export interface TagRepoDeps extends EngineDeps {
  config: { data: string };
  blobs: BlobStore;
  /** The archive key: repos are signed with it, so a worker's apt takes `signed-by` the hub's key. */
  archiveKey: Signer & { ensure(): Promise<unknown> };
}

/** Repo states whose files are on disk (or being written). */
const LIVE_STATES: readonly TagRepoState[] = ["init", "ready", "expired"];

export function tagReposDir(data: string): string {
  return path.join(data, "repos");
}

/**
 * Where one tag's repos are written: each repo is a publication whose prefix is its id under
 * `<data>/repos/<tag>/`. The tag is a directory rather than a prefix segment, so every valid tag
 * name works (a prefix refuses `pool`, `dists` and names over 100 characters).
 */
export function tagRepoDirs(data: string, tag: string): PublishDirs {
  return { publicDir: path.join(tagReposDir(data), tag), stagingDir: path.join(data, "staging") };
}

/** The exclusive lock a newRepo holds: two generations of one tag never interleave. */
export function newRepoLock(tag: string): LockSpec {
  return { resource: `tagrepo:${tag}`, exclusive: true };
}

// --- Rows ----------------------------------------------------------------------------------------

type RepoRow = Selectable<TagReposTable> & { tag: string };

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function toTagRepoJson(row: RepoRow): TagRepoJson {
  return {
    id: row.id,
    tag: row.tag,
    state: row.state as TagRepoState,
    eventId: row.event_id,
    builds: JSON.parse(row.builds) as TagRepoJson["builds"],
    packageCount: row.package_count,
    createdAt: new Date(row.created_at).toISOString(),
    readyAt: iso(row.ready_at),
    expiredAt: iso(row.expired_at),
    deletedAt: iso(row.deleted_at),
    path: tagRepoPath(row.tag, row.id),
    taskId: row.task_id,
    error: row.error,
  };
}

function selectRepos(db: Kysely<Database>) {
  return db
    .selectFrom("tag_repos")
    .innerJoin("tags", "tags.id", "tag_repos.tag_id")
    .selectAll("tag_repos")
    .select("tags.name as tag");
}

/** The newest ready repo of the tag: what a build installs from now. */
export async function currentTagRepo(db: Kysely<Database>, tag: string): Promise<TagRepoJson | undefined> {
  const row = await selectRepos(db)
    .where("tags.name", "=", tag)
    .where("tag_repos.state", "=", "ready")
    .orderBy("tag_repos.id", "desc")
    .limit(1)
    .executeTakeFirst();
  return row ? toTagRepoJson(row) : undefined;
}

/** Every repo the tag has had, newest first (TAG_NOT_FOUND for an unknown tag). */
export async function listTagRepos(
  db: Kysely<Database>,
  tag: string,
  opts: { limit?: number } = {},
): Promise<TagRepoJson[]> {
  const row = await getTagRow(db, tag);
  const rows = await selectRepos(db)
    .where("tag_repos.tag_id", "=", row.id)
    .orderBy("tag_repos.id", "desc")
    .limit(opts.limit ?? 100)
    .execute();
  return rows.map(toTagRepoJson);
}

/**
 * Records that a build installs from a repo, if the repo still exists (ready, or expired but not
 * yet deleted): the check and the write are one statement, so cleanup never removes a repo
 * between a build choosing it and the build saying so. False: choose again.
 */
export async function pinTagRepo(db: Kysely<Database>, buildId: number, repoId: number): Promise<boolean> {
  const res = await db
    .updateTable("builds")
    .set({ tag_repo_id: repoId })
    .where("id", "=", buildId)
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom("tag_repos")
          .select("id")
          .where("id", "=", repoId)
          .where("state", "in", ["ready", "expired"]),
      ),
    )
    .executeTakeFirst();
  return res.numUpdatedRows > 0n;
}

// --- Queueing ------------------------------------------------------------------------------------

/** The tag's newRepo tasks in these states (found through the lock every one of them holds). */
export async function newRepoTasks(
  db: Kysely<Database>,
  tag: string,
  states: readonly string[],
): Promise<TaskRow[]> {
  return db
    .selectFrom("task_locks")
    .innerJoin("tasks", "tasks.id", "task_locks.task_id")
    .selectAll("tasks")
    .where("task_locks.resource", "=", newRepoLock(tag).resource)
    .where("tasks.method", "=", "newRepo")
    .where("tasks.state", "in", [...states])
    .orderBy("tasks.id")
    .execute();
}

/**
 * Queues a `newRepo` for the tag, or returns the one already queued (not yet claimed): it reads
 * the tag when it runs, so it covers every change made before then. A running one does not
 * count, since it may have read the tag before the change that asks for a new repo.
 */
export async function queueNewRepo(
  deps: EngineDeps,
  tag: string,
  opts: { owner?: string } = {},
): Promise<TaskRow> {
  const lock = newRepoLock(tag);
  const { row, created } = await withWriteTx(deps.db, async (trx) => {
    // Two hubs on PostgreSQL must not both find none and both queue (SQLite has one writer).
    if (deps.db.dialect === "postgres") await lockResource(trx, lock.resource);
    await getTagRow(trx, tag);
    const [queued] = await newRepoTasks(trx, tag, ["free"]);
    if (queued) return { row: queued, created: false };
    return insertTask(deps, trx, {
      method: "newRepo",
      args: { tag },
      owner: opts.owner ?? "kiln",
      locks: [lock],
    });
  });
  if (created) deps.wake.notify(queuedHint([row]));
  return row;
}

/**
 * Resolves when something may have changed (a wake-up of the engine), after `pollMs`, or when
 * `signal` aborts; never sooner than `minMs`, so a busy engine's wake-ups cost one look each
 * `minMs` rather than one each.
 */
export function waitForChange(
  deps: Pick<EngineDeps, "wake">,
  opts: { pollMs: number; minMs?: number; signal?: AbortSignal | undefined },
): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    const minMs = Math.min(opts.minMs ?? 200, opts.pollMs);
    let woken = false;
    const finish = () => {
      clearTimeout(minTimer);
      clearTimeout(pollTimer);
      off();
      opts.signal?.removeEventListener("abort", finish);
      resolve();
    };
    const off = deps.wake.on(() => {
      woken = true;
      if (Date.now() - started >= minMs) finish();
    });
    const minTimer = setTimeout(() => woken && finish(), minMs);
    const pollTimer = setTimeout(finish, opts.pollMs);
    if (opts.signal?.aborted) finish();
    else opts.signal?.addEventListener("abort", finish, { once: true });
  });
}

/**
 * The tag's ready repo; when it has none, queues a newRepo and waits for it. TAG_REPO_FAILED
 * when the generation fails, TAG_REPO_TIMEOUT when it takes longer than `timeoutMs` (30 min).
 */
export async function ensureTagRepo(
  deps: EngineDeps,
  tag: string,
  opts: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<TagRepoJson> {
  const db = deps.db.kysely;
  const current = await currentTagRepo(db, tag);
  if (current) return current;
  const task = await queueNewRepo(deps, tag);
  const deadline = deps.clock.now() + (opts.timeoutMs ?? 30 * 60_000);
  for (;;) {
    const row = await getTask(deps, task.id);
    if (row.state === "closed") break;
    if (row.state === "failed" || row.state === "canceled") throw generationFailed(tag, row);
    if (opts.signal?.aborted) throw new KilnError("TASK_CANCELED", `stopped waiting for a repo of ${tag}`);
    if (deps.clock.now() >= deadline) {
      throw new KilnError(
        "TAG_REPO_TIMEOUT",
        `no repo of ${tag} was ready in time: its newRepo task ${task.id} is still ${row.state}`,
        { tag, task: task.id },
      );
    }
    await waitForChange(deps, { pollMs: 1000, signal: opts.signal });
  }
  const made = await currentTagRepo(db, tag);
  if (!made) {
    throw new KilnError("TAG_REPO_NOT_FOUND", `task ${task.id} closed, but ${tag} has no ready repo`, {
      tag,
      task: task.id,
    });
  }
  return made;
}

function generationFailed(tag: string, row: TaskRow): KilnError {
  const err = row.error ? (JSON.parse(row.error) as TaskError) : undefined;
  const why = err ? `${err.message} [${err.code}]` : row.state;
  return new KilnError(
    "TAG_REPO_FAILED",
    `making a repo of ${tag} failed (task ${row.id}): ${why}; \`kiln task logs ${row.id}\` has its log`,
    { tag, task: row.id, ...(err ? { cause: err.code } : {}) },
  );
}

// --- Removal -------------------------------------------------------------------------------------

/** Removes a repo's files: its distribution (and what this process remembers of it), then the rest. */
export async function removeTagRepoFiles(data: string, tag: string, id: number): Promise<void> {
  const dirs = tagRepoDirs(data, tag);
  await removeDistribution(dirs, String(id), TAG_REPO_DIST);
  await rm(path.join(dirs.publicDir, String(id)), { recursive: true, force: true });
}

/**
 * Deletes expired repos that no build in state `building` installs from: the row first (state
 * `deleted`, checked and changed in one guarded statement), then the files. Repos of tags that
 * were deleted go too. Returns the ids deleted.
 */
export async function cleanupTagRepos(deps: TagRepoDeps): Promise<number[]> {
  const db = deps.db.kysely;
  const notInUse = () =>
    sql<boolean>`NOT EXISTS (SELECT 1 FROM builds WHERE builds.tag_repo_id = tag_repos.id AND builds.state = 'building')`;
  // A read first: most calls find nothing, and then take no write lock.
  const candidates = await db
    .selectFrom("tag_repos")
    .leftJoin("tags", "tags.id", "tag_repos.tag_id")
    .select(["tag_repos.id as id", "tags.name as tag"])
    .where((eb) =>
      eb.or([
        eb.and([eb("tag_repos.state", "=", "expired"), notInUse()]),
        eb.and([eb("tag_repos.state", "in", ["ready", "expired"]), eb("tags.id", "is", null)]),
      ]),
    )
    .execute();
  if (candidates.length === 0) return [];
  const now = deps.clock.now();
  const deleted = await withWriteTx(deps.db, async (trx) => {
    const rows = await trx
      .updateTable("tag_repos")
      .set({ state: "deleted", deleted_at: now })
      .where(
        "id",
        "in",
        candidates.map((c) => c.id),
      )
      .where((eb) =>
        eb.or([
          eb.and([eb("state", "=", "expired"), notInUse()]),
          sql<boolean>`NOT EXISTS (SELECT 1 FROM tags WHERE tags.id = tag_repos.tag_id)`,
        ]),
      )
      .where("state", "in", ["ready", "expired"])
      .returning(["id", "tag_id"])
      .execute();
    for (const r of rows) {
      const tag = candidates.find((c) => c.id === r.id)?.tag ?? null;
      await recordEvent(trx, "tagrepo.deleted", { tag, tagId: r.tag_id, repoId: r.id }, null, now);
    }
    return rows;
  });
  for (const r of deleted) {
    const tag = candidates.find((c) => c.id === r.id)?.tag;
    if (tag) await removeTagRepoFiles(deps.config.data, tag, r.id);
  }
  if (deleted.some((r) => !candidates.find((c) => c.id === r.id)?.tag)) await sweepTagRepoDirs(deps);
  if (deleted.length > 0)
    deps.log.info({ repos: deleted.map((r) => r.id) }, "expired tag repos no build uses were deleted");
  return deleted.map((r) => r.id);
}

/**
 * Removes directories under `<data>/repos/` that no live repo owns: what a crash left between a
 * row's change and its files' removal, and repos of tags since deleted or renamed. Directories
 * are listed before the rows are read, and a repo's row is written before its directory, so a
 * generation running meanwhile is never swept.
 */
export async function sweepTagRepoDirs(deps: TagRepoDeps): Promise<number> {
  const root = tagReposDir(deps.config.data);
  const found: { tag: string; id: string }[] = [];
  for (const tag of await readdir(root).catch(() => [] as string[])) {
    for (const id of await readdir(path.join(root, tag)).catch(() => [] as string[])) found.push({ tag, id });
  }
  if (found.length === 0) return 0;
  const live = await selectRepos(deps.db.kysely)
    .where("tag_repos.state", "in", [...LIVE_STATES])
    .execute();
  const keep = new Set(live.map((r) => `${r.tag}/${r.id}`));
  let removed = 0;
  for (const f of found) {
    if (keep.has(`${f.tag}/${f.id}`)) continue;
    if (/^[0-9]+$/.test(f.id)) await removeTagRepoFiles(deps.config.data, f.tag, Number(f.id));
    else await rm(path.join(root, f.tag, f.id), { recursive: true, force: true });
    removed++;
  }
  return removed;
}
