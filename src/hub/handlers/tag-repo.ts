import type { TagRepoJson } from "../../client/types.js";
import { generateTagRepo } from "../../builds/tag-repo-generate.js";
import { parseNewRepoArgs, parseWaitRepoArgs, type WaitRepoArgs } from "../../builds/tag-repo-methods.js";
import {
  currentTagRepo,
  newRepoTasks,
  queueNewRepo,
  repoHasBuilds,
  waitForChange,
} from "../../builds/tag-repos.js";
import { getTagRow, latestInTag } from "../../builds/tag-store.js";
import { KilnError } from "../../errors/catalogue.js";
import { ACTIVE_STATES } from "../../tasks/types.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

/** A waiting waitRepo looks again on every wake-up of the engine, and at least this often. */
const POLL_MS = 5000;
/** How often a waitRepo may queue a newRepo itself (a generation that keeps failing is not rerun in a loop). */
const NUDGE_MS = 60_000;

/** Runs a handler's work; a KilnError fails the task with its code. */
function asTask(work: (ctx: TaskContext) => Promise<unknown>): TaskHandler {
  return async (ctx) => {
    try {
      return { result: await work(ctx) };
    } catch (err) {
      if (err instanceof KilnError) throw new TaskFailure(err.code, err.message);
      throw err;
    }
  };
}

/** `newRepo {tag}`: a new repo of the tag, or the ready one (`unchanged`) when nothing changed. */
export function newRepoHandler(deps: HubDeps): TaskHandler {
  return asTask(async (ctx) => {
    const { tag } = parseNewRepoArgs(ctx.task.args);
    const repo = await generateTagRepo(deps, tag, { taskId: ctx.task.id, actor: ctx.task.owner });
    ctx.log(
      repo.unchanged
        ? `${tag}: the latest builds are those of repo ${repo.id}; no new repo made\n`
        : `${tag}: repo ${repo.id} is ready (event ${repo.eventId}, ${repo.builds.length} builds, ${repo.packageCount} packages) at ${repo.path}\n`,
    );
    return repo;
  });
}

/** `waitRepo {tag, builds, timeoutS}`: Koji's waitrepo. */
export function waitRepoHandler(deps: HubDeps): TaskHandler {
  return asTask((ctx) => waitForRepo(deps, ctx));
}

export function tagRepoHandlers(deps: HubDeps): [string, TaskHandler][] {
  return [
    ["newRepo", newRepoHandler(deps)],
    ["waitRepo", waitRepoHandler(deps)],
  ];
}

async function nvrsOf(deps: HubDeps, ids: readonly number[]): Promise<Map<number, string>> {
  if (ids.length === 0) return new Map();
  const rows = await deps.db.kysely
    .selectFrom("builds")
    .select(["id", "source", "version"])
    .where("id", "in", [...ids])
    .execute();
  const out = new Map(rows.map((r) => [r.id, `${r.source}/${r.version}`]));
  const missing = ids.filter((id) => !out.has(id));
  if (missing.length > 0) {
    throw new KilnError("BUILD_NOT_FOUND", `no build with id ${missing.join(", ")}`, { builds: missing });
  }
  return out;
}

/**
 * Waits until the tag's ready repo holds every build. It runs again from the top after a hub
 * restart: the deadline counts from the task's creation, and everything else is read afresh.
 */
async function waitForRepo(deps: HubDeps, ctx: TaskContext): Promise<TagRepoJson> {
  const args = parseWaitRepoArgs(ctx.task.args);
  const db = deps.db.kysely;
  await getTagRow(db, args.tag);
  const nvrs = await nvrsOf(deps, args.builds);
  // Ahead of the engine's own timeout, so the task fails with the code that says why.
  const limitS = Math.min(args.timeoutS, Math.max(1, ctx.task.timeout - 15));
  const deadline = Date.parse(ctx.task.createdAt) + limitS * 1000;
  const what = args.builds.length > 0 ? [...nvrs.values()].join(", ") : "any build";
  ctx.log(`waiting for a ready repo of ${args.tag} holding ${what}\n`);
  let nudgeAt = 0;
  for (;;) {
    const repo = await currentTagRepo(db, args.tag);
    if (repo && repoHasBuilds(repo, args.builds)) {
      ctx.log(`repo ${repo.id} (event ${repo.eventId}) holds them: ${repo.path}\n`);
      return repo;
    }
    const now = deps.clock.now();
    if (now >= deadline) throw await timedOut(deps, args, nvrs, repo, limitS);
    if (now >= nudgeAt) {
      nudgeAt = now + NUDGE_MS;
      await nudge(deps, ctx, args, repo);
    }
    await waitForChange(deps, { pollMs: Math.min(POLL_MS, deadline - now), signal: ctx.signal });
    if (ctx.signal.aborted) throw new KilnError("TASK_CANCELED", "stopped waiting for the repo");
  }
}

/**
 * Queues a newRepo when none is queued or running and the tag has every build (after a restart,
 * or a change the tracker has not seen yet). A build not in the tag's latest builds is not
 * nudged for: a new repo would not hold it either; the wait goes on until it is tagged.
 */
async function nudge(
  deps: HubDeps,
  ctx: TaskContext,
  args: WaitRepoArgs,
  repo: TagRepoJson | undefined,
): Promise<void> {
  if ((await newRepoTasks(deps.db.kysely, args.tag, ACTIVE_STATES)).length > 0) return;
  const latest = new Set((await latestInTag(deps, args.tag)).map((b) => b.buildId));
  if (!args.builds.every((id) => latest.has(id))) return;
  const task = await queueNewRepo(deps, args.tag, { owner: ctx.task.owner });
  ctx.log(
    `${args.tag} has the builds but ${repo ? `repo ${repo.id} lacks them` : "has no ready repo"}: newRepo task ${task.id} makes one\n`,
  );
}

async function timedOut(
  deps: HubDeps,
  args: WaitRepoArgs,
  nvrs: Map<number, string>,
  repo: TagRepoJson | undefined,
  limitS: number,
): Promise<KilnError> {
  const held = new Set(repo?.builds.map((b) => b.buildId) ?? []);
  const latest = new Set((await latestInTag(deps, args.tag)).map((b) => b.buildId));
  const lacking = args.builds.filter((id) => !held.has(id));
  const untagged = lacking.filter((id) => !latest.has(id)).map((id) => nvrs.get(id) ?? `#${id}`);
  const where = repo ? `repo ${repo.id} (event ${repo.eventId})` : "no ready repo";
  return new KilnError(
    "TAG_REPO_TIMEOUT",
    `after ${limitS}s ${args.tag} has ${where}` +
      (lacking.length > 0 ? `, without ${lacking.map((id) => nvrs.get(id) ?? `#${id}`).join(", ")}` : "") +
      (untagged.length > 0
        ? `; not among the tag's latest builds: ${untagged.join(", ")} (tag them, or wait for the right build)`
        : ""),
    { tag: args.tag, repo: repo?.id ?? null, lacking },
  );
}
