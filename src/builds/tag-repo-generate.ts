/**
 * Writing a tag repo: the tag's latest builds through inheritance as of an event, published with
 * the same planner and writer as publications (signed with the archive key) into
 * `<data>/repos/<tag>/<id>/`, then switched to `ready` with the previous one expired.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { TagRepoJson } from "../client/types.js";
import { withWriteTx } from "../db/database.js";
import { KilnError } from "../errors/catalogue.js";
import { latestEventId, recordEvent } from "../events/outbox.js";
import { applyPublication } from "../publish/apply-publication.js";
import type { PackageRecord } from "../publish/package-store.js";
import { planPublication } from "../publish/plan-publication.js";
import { packagesOfBuild, type PublishDeps } from "../publish/publish-ops.js";
import { detectArches } from "../debian/native-arch.js";
import { latestInTag, resolveTag } from "./tag-store.js";
import {
  cleanupTagRepos,
  currentTagRepo,
  removeTagRepoFiles,
  TAG_REPO_COMPONENT,
  TAG_REPO_DIST,
  tagRepoDirs,
  toTagRepoJson,
  type TagRepoDeps,
} from "./tag-repos.js";

export interface GenerateOptions {
  taskId?: number | null;
  /** Who the events name (the task's owner). */
  actor?: string | null;
}

type RepoBuilds = TagRepoJson["builds"];

let nativeArches: string[] | undefined;

/** The binary architectures a tag's repo lists: the tag's, else this host's own. */
export function repoArches(tagArches: readonly string[] | null): string[] {
  if (tagArches && tagArches.length > 0) return [...new Set(tagArches)].sort();
  nativeArches ??= detectArches();
  return [...nativeArches];
}

function sameBuilds(a: RepoBuilds, b: RepoBuilds): boolean {
  const ids = (l: RepoBuilds) =>
    l
      .map((x) => x.buildId)
      .sort((x, y) => x - y)
      .join(",");
  return ids(a) === ids(b);
}

/** The binary architectures a repo on disk lists in its Release (none: it is not there). */
async function archesOnDisk(data: string, repo: TagRepoJson): Promise<string[] | undefined> {
  const { publicDir } = tagRepoDirs(data, repo.tag);
  const release = await readFile(
    path.join(publicDir, String(repo.id), "dists", TAG_REPO_DIST, "Release"),
    "utf8",
  ).catch(() => undefined);
  const line = release === undefined ? undefined : /^Architectures: ?(.*)$/m.exec(release)?.[1];
  return line === undefined ? undefined : line.split(" ").filter(Boolean).sort();
}

function publishDepsOf(deps: TagRepoDeps, tag: string): PublishDeps {
  return {
    db: deps.db,
    clock: deps.clock,
    blobs: deps.blobs,
    dirs: tagRepoDirs(deps.config.data, tag),
    signer: async () => {
      await deps.archiveKey.ensure();
      return deps.archiveKey;
    },
    log: deps.log,
  };
}

/**
 * Makes a new ready repo of the tag, or returns the ready one (with `unchanged`) when the tag's
 * latest builds and architectures are the same as when it was made. The caller holds the tag's
 * `tagrepo:` lock (the newRepo task does), so generations of one tag never interleave.
 */
export async function generateTagRepo(
  deps: TagRepoDeps,
  tag: string,
  opts: GenerateOptions = {},
): Promise<TagRepoJson> {
  const db = deps.db.kysely;
  // The event first, and the tag as of it: the contents and the event recorded agree even when
  // the tag changes meanwhile (a later change queues another newRepo).
  const event = await latestEventId(db);
  const { tag: tagRow, config } = await resolveTag(db, tag, event);
  const latest = await latestInTag(deps, tag, event);
  const builds: RepoBuilds = latest
    .map((b) => ({ buildId: b.buildId, nvr: b.nvr }))
    .sort((a, b) => a.buildId - b.buildId);
  const arches = repoArches(config.arches);

  const current = await currentTagRepo(db, tag);
  if (current && sameBuilds(current.builds, builds)) {
    const onDisk = await archesOnDisk(deps.config.data, current);
    if (onDisk?.join(",") === arches.join(",")) return { ...current, unchanged: true };
  }

  const { repo, interrupted } = await insertInitRow(deps, tagRow.id, tag, event, builds, opts);
  for (const id of interrupted) await removeTagRepoFiles(deps.config.data, tag, id);
  let packageCount: number;
  try {
    packageCount = await writeRepo(deps, tag, repo.id, builds, arches);
  } catch (err) {
    await markFailed(deps, tag, repo.id, err, opts);
    await removeTagRepoFiles(deps.config.data, tag, repo.id);
    throw err;
  }
  const ready = await markReady(deps, tagRow.id, tag, repo.id, packageCount, opts);
  await cleanupTagRepos(deps);
  return ready;
}

/** The new row, `init`; rows of this tag still `init` were cut off by a crash and are failed. */
async function insertInitRow(
  deps: TagRepoDeps,
  tagId: number,
  tag: string,
  event: number,
  builds: RepoBuilds,
  opts: GenerateOptions,
): Promise<{ repo: TagRepoJson; interrupted: number[] }> {
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const stale = await trx
      .updateTable("tag_repos")
      .set({ state: "failed", error: "interrupted before it was ready" })
      .where("tag_id", "=", tagId)
      .where("state", "=", "init")
      .returning("id")
      .execute();
    for (const s of stale) {
      await recordEvent(
        trx,
        "tagrepo.failed",
        { tag, repoId: s.id, error: "interrupted before it was ready" },
        opts.actor ?? null,
        now,
      );
    }
    const row = await trx
      .insertInto("tag_repos")
      .values({
        tag_id: tagId,
        state: "init",
        event_id: event,
        builds: JSON.stringify(builds),
        package_count: 0,
        task_id: opts.taskId ?? null,
        error: null,
        created_at: now,
        ready_at: null,
        expired_at: null,
        deleted_at: null,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { repo: toTagRepoJson({ ...row, tag }), interrupted: stale.map((s) => s.id) };
  });
}

/** Plans and writes the repo's files; returns how many packages it lists. */
async function writeRepo(
  deps: TagRepoDeps,
  tag: string,
  id: number,
  builds: RepoBuilds,
  arches: string[],
): Promise<number> {
  const p = publishDepsOf(deps, tag);
  const packages: PackageRecord[] = [];
  for (const b of builds) packages.push(...(await packagesOfBuild(p, b.buildId)));
  // Sources too when there are any (as a publication of a tag has them), for apt-get source.
  const withSource = packages.some((pkg) => pkg.kind === "dsc");
  const plan = planPublication({
    distribution: TAG_REPO_DIST,
    components: [{ component: TAG_REPO_COMPONENT, packages }],
    architectures: withSource ? [...arches, "source"] : arches,
  });
  await applyPublication(p.dirs, deps.blobs, {
    plan,
    prefix: String(id),
    generation: 1,
    meta: { origin: "Kiln", label: tag, description: `Kiln tag ${tag}, repo ${id}` },
    signer: await p.signer(),
    date: new Date(deps.clock.now()),
    keep: 1,
  });
  return plan.packageCount;
}

async function markReady(
  deps: TagRepoDeps,
  tagId: number,
  tag: string,
  id: number,
  packageCount: number,
  opts: GenerateOptions,
): Promise<TagRepoJson> {
  const now = deps.clock.now();
  const actor = opts.actor ?? null;
  return withWriteTx(deps.db, async (trx) => {
    const row = await trx
      .updateTable("tag_repos")
      .set({ state: "ready", ready_at: now, package_count: packageCount })
      .where("id", "=", id)
      .where("state", "=", "init")
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new KilnError("INTERNAL", `tag repo ${id} of ${tag} was no longer being made`);
    const expired = await trx
      .updateTable("tag_repos")
      .set({ state: "expired", expired_at: now })
      .where("tag_id", "=", tagId)
      .where("state", "=", "ready")
      .where("id", "!=", id)
      .returning("id")
      .execute();
    await recordEvent(
      trx,
      "tagrepo.ready",
      // A count, not the list: a tag of thousands of builds would make every event huge.
      {
        tag,
        repoId: id,
        eventId: row.event_id,
        buildCount: (JSON.parse(row.builds) as unknown[]).length,
        packageCount,
      },
      actor,
      now,
    );
    for (const e of expired)
      await recordEvent(trx, "tagrepo.expired", { tag, repoId: e.id, replacedBy: id }, actor, now);
    return toTagRepoJson({ ...row, tag });
  });
}

async function markFailed(
  deps: TagRepoDeps,
  tag: string,
  id: number,
  err: unknown,
  opts: GenerateOptions,
): Promise<void> {
  const message = (err instanceof Error ? err.message : String(err)).slice(0, 2000);
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    await trx
      .updateTable("tag_repos")
      .set({ state: "failed", error: message })
      .where("id", "=", id)
      .where("state", "=", "init")
      .execute();
    await recordEvent(
      trx,
      "tagrepo.failed",
      {
        tag,
        repoId: id,
        error: message.slice(0, 500),
        ...(err instanceof KilnError ? { code: err.code } : {}),
      },
      opts.actor ?? null,
      now,
    );
  });
}
