import type { Kysely } from "kysely";
import {
  buildLabel,
  chainReport,
  chainResult,
  describeChainStop,
  nvrOf,
  repoLabel,
  type ChainBuildArgs,
  type ChainReport,
} from "../../builds/chain-report.js";
import { insertBuild } from "../../builds/submit-build.js";
import { withWriteTx } from "../../db/database.js";
import type { Database } from "../../db/schema.js";
import { KilnError } from "../../errors/catalogue.js";
import { cancelIds } from "../../tasks/cancel-task.js";
import { queuedHint } from "../../tasks/create-task.js";
import { explainMiss, type LeaseRef } from "../../tasks/finish-task.js";
import { isFinal, RUNNING_STATES, toTaskJson, type TaskJson, type TaskRow } from "../../tasks/types.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

/** The method tag repositories provide: closes once a ready repo of `tag` holds all `builds`. */
const WAIT_REPO = "waitRepo";

/** A chain's subtasks as they are now, oldest first. */
export async function loadSubtasks(db: Kysely<Database>, taskId: number): Promise<TaskJson[]> {
  const rows = await db
    .selectFrom("tasks")
    .selectAll()
    .where("parent_id", "=", taskId)
    .orderBy("id")
    .execute();
  return rows.map(toTaskJson);
}

/** The chain's row while this attempt holds its lease; else why not (LEASE_STALE, TASK_CANCELED…). */
async function holdsLease(trx: Kysely<Database>, ref: LeaseRef): Promise<TaskRow> {
  const row = await trx.selectFrom("tasks").selectAll().where("id", "=", ref.id).executeTakeFirst();
  const held =
    row?.lease_epoch === ref.epoch &&
    row.host_id === ref.hostId &&
    (RUNNING_STATES as readonly string[]).includes(row.state);
  return held ? row : explainMiss(trx, ref, []);
}

/**
 * Creates group `g`'s builds — each `builds` row with its `build` subtask — in one transaction
 * under the chain's lease, unless they exist already (a run after a restart finds them by label).
 * A version built meanwhile by someone else stops the chain before any of the group starts.
 */
async function startGroup(deps: HubDeps, ctx: TaskContext, args: ChainBuildArgs, g: number): Promise<void> {
  const ref: LeaseRef = { id: ctx.task.id, epoch: ctx.epoch, hostId: ctx.task.hostId ?? -1 };
  const entries = args.groups[g - 1] ?? [];
  let rows: TaskRow[];
  try {
    rows = await withWriteTx(deps.db, async (trx) => {
      const parent = await holdsLease(trx, ref);
      const started = await trx
        .selectFrom("tasks")
        .select("id")
        .where("parent_id", "=", ref.id)
        .where("label", "=", buildLabel(g, 1))
        .executeTakeFirst();
      if (started) return [];
      const made: TaskRow[] = [];
      for (const [j, e] of entries.entries()) {
        const { task } = await insertBuild(deps, trx, {
          checked: { ...e, target: args.target },
          owner: parent.owner,
          priority: parent.priority,
          parent: { id: parent.id, label: buildLabel(g, j + 1) },
        });
        made.push(task);
      }
      return made;
    });
  } catch (err) {
    if (!(err instanceof KilnError && err.code === "BUILD_EXISTS")) throw err;
    return stopChain(deps, ctx, args, {
      started: g - 1,
      code: "BUILD_EXISTS",
      headline: `group ${g} of ${args.groups.length} could not start: ${err.message}`,
    });
  }
  if (rows.length === 0) return;
  deps.wake.notify(queuedHint(rows));
  ctx.log(`group ${g} of ${args.groups.length}: building ${entries.map(nvrOf).join(", ")}\n`);
}

/**
 * Cancels what still runs of the chain and fails it with a report of what built and what did
 * not. `started`: how many groups' builds were created; the later groups' sources are removed,
 * as nothing will read them now.
 */
async function stopChain(
  deps: HubDeps,
  ctx: TaskContext,
  args: ChainBuildArgs,
  stop: { started: number; code: string; headline: string },
): Promise<never> {
  const active = (await loadSubtasks(deps.db.kysely, ctx.task.id))
    .filter((t) => !isFinal(t.state))
    .map((t) => t.id);
  await withWriteTx(deps.db, (trx) =>
    cancelIds(deps, trx, active, { code: "TASK_CANCELED", message: `chain build ${ctx.task.id} stopped` }),
  );
  deps.wake.notify();
  for (const e of args.groups.slice(stop.started).flat()) {
    await deps.uploads.remove(e.upload).catch(() => false);
  }
  const report = chainReport(args, await loadSubtasks(deps.db.kysely, ctx.task.id));
  const message = describeChainStop(report, stop.headline);
  ctx.log(`${message}\n`);
  throw new TaskFailure(stop.code, message);
}

/** A failed or canceled build stops the chain: BUILD_DEPS_MISSING when that is why, else BUILD_FAILED. */
async function checkGroup(
  deps: HubDeps,
  ctx: TaskContext,
  args: ChainBuildArgs,
  g: number,
  report: ChainReport,
): Promise<void> {
  const mine = report.builds.filter((b) => b.group === g);
  const bad = mine.find((b) => b.state === "failed") ?? mine.find((b) => b.state === "canceled");
  if (!bad) return;
  await stopChain(deps, ctx, args, {
    started: g,
    code: bad.error?.code === "BUILD_DEPS_MISSING" ? "BUILD_DEPS_MISSING" : "BUILD_FAILED",
    headline: `group ${g} of ${args.groups.length} did not build`,
  });
}

/** Waits (suspending the chain) until the build tag's repository holds group `g`'s builds. */
async function waitForRepo(
  deps: HubDeps,
  ctx: TaskContext,
  args: ChainBuildArgs,
  g: number,
  report: ChainReport,
): Promise<boolean> {
  const tag = args.target.buildTag;
  const builds = report.builds.filter((b) => b.group === g).flatMap((b) => b.buildId ?? []);
  if (!report.repoWaits.some((w) => w.group === g)) {
    ctx.log(`group ${g} built; waiting for ${tag}'s repository to contain it\n`);
  }
  await ctx.client.createSubtasks(ctx.task.id, ctx.epoch, [
    { label: repoLabel(g), method: WAIT_REPO, args: { tag, builds }, arch: "noarch" },
  ]);
  if (!(await ctx.client.waitSubtasks(ctx.task.id, ctx.epoch)).done) return false;
  const repo = (await loadSubtasks(deps.db.kysely, ctx.task.id)).find((t) => t.label === repoLabel(g));
  if (repo?.state === "closed") return true;
  const why = repo?.error
    ? `${repo.error.message} [${repo.error.code}]`
    : `its task ${repo?.state ?? "is gone"}`;
  return stopChain(deps, ctx, args, {
    started: g,
    code: repo?.error?.code ?? "SUBTASK_FAILED",
    headline: `group ${g + 1} of ${args.groups.length} never started: ${tag}'s repository did not come to hold group ${g}'s builds: ${why}`,
  });
}

/**
 * The `chainBuild` task (hub side), Koji's chain-build: group after group, the builds of a group
 * in parallel; between groups a `waitRepo` subtask until the build tag's repository holds the
 * group's builds, so the next group's Build-Depends can name them (none after the last group).
 * Re-entrant like `build`: each time its subtasks finish it runs again from the top and finds
 * them by label, so a hub restart at any point creates no build twice.
 */
export function chainBuildHandler(deps: HubDeps): TaskHandler {
  return async (ctx) => {
    const args = ctx.task.args as ChainBuildArgs;
    const n = args.groups.length;
    for (let g = 1; g <= n; g++) {
      await startGroup(deps, ctx, args, g);
      if (!(await ctx.client.waitSubtasks(ctx.task.id, ctx.epoch)).done) return { suspend: true };
      const report = chainReport(args, await loadSubtasks(deps.db.kysely, ctx.task.id));
      await checkGroup(deps, ctx, args, g, report);
      if (g === n) {
        ctx.log(`all ${report.builds.length} builds of the chain are complete\n`);
        return { result: chainResult(report) };
      }
      if (!(await waitForRepo(deps, ctx, args, g, report))) return { suspend: true };
    }
    return { result: chainResult(chainReport(args, [])) };
  };
}
