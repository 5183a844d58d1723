import type { BuildArchArgs, BuildSrcArgs, BuildSrcResult, TaskJson } from "../../client/types.js";
import { planArches } from "../../builds/arch-plan.js";
import { importBuild } from "../../builds/build-store.js";
import { resolveTag } from "../../builds/tag-store.js";
import { withWriteTx } from "../../db/database.js";
import { cancelIds } from "../../tasks/cancel-task.js";
import { isFinal } from "../../tasks/types.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

export interface BuildTaskArgs {
  buildId: number;
  source: string;
  version: string;
  upload: string;
  input: { type: "tarball" | "dsc"; file: string };
  buildTag: string;
  destTag: string;
  scratch: boolean;
  archOverride: string[];
}

/**
 * One step: make sure the subtasks exist (idempotent by label) and have finished. Returns them,
 * or null when the task has been suspended until they do.
 */
async function stage(
  ctx: TaskContext,
  subtasks: Parameters<TaskContext["client"]["createSubtasks"]>[2],
): Promise<TaskJson[] | null> {
  const created = await ctx.client.createSubtasks(ctx.task.id, ctx.epoch, subtasks);
  const waited = await ctx.client.waitSubtasks(ctx.task.id, ctx.epoch);
  if (!waited.done) return null;
  const labels = new Set(created.tasks.map((t) => t.id));
  return waited.subtasks.filter((t) => labels.has(t.id));
}

async function failOnBad(deps: HubDeps, ctx: TaskContext, tasks: TaskJson[], all: TaskJson[]): Promise<void> {
  const bad = tasks.find((t) => t.state === "failed" || t.state === "canceled");
  if (!bad) return;
  const active = all.filter((t) => !isFinal(t.state)).map((t) => t.id);
  await withWriteTx(deps.db, (trx) =>
    cancelIds(deps, trx, active, { code: "TASK_CANCELED", message: `sibling task ${bad.id} ${bad.state}` }),
  );
  deps.wake.notify();
  const arch = (bad.args as { arch?: string }).arch;
  const what = bad.method === "buildArch" ? `${bad.method} for ${arch ?? "?"}` : bad.method;
  const code = bad.error?.code === "BUILD_DEPS_MISSING" ? "BUILD_DEPS_MISSING" : "BUILD_FAILED";
  ctx.log(`${what} (task ${bad.id}) ${bad.state}: ${bad.error?.message ?? ""}\n`);
  throw new TaskFailure(
    code,
    `${what} (task ${bad.id}) ${bad.state}: ${bad.error?.message ?? "see its log"}`,
    {
      exitCode: bad.error?.exitCode ?? null,
    },
  );
}

/**
 * The `build` task (hub side), Koji's build → buildSrc → buildArch… → import → tagBuild. It is
 * re-entrant: each time its subtasks finish it runs again from the top and finds them by label,
 * so a hub restart at any point loses nothing and creates nothing twice.
 */
export function buildHandler(deps: HubDeps): TaskHandler {
  return async (ctx) => {
    const args = ctx.task.args as BuildTaskArgs;
    const srcArgs: BuildSrcArgs = { buildId: args.buildId, upload: args.upload, source: args.input };
    const srcStage = await stage(ctx, [
      { label: "buildSrc", method: "buildSrc", args: srcArgs, arch: "noarch" },
    ]);
    if (!srcStage) return { suspend: true };
    await failOnBad(deps, ctx, srcStage, srcStage);
    const src = srcStage[0]!.result as BuildSrcResult;
    if (src.source !== args.source || src.version !== args.version) {
      throw new TaskFailure(
        "SOURCE_INVALID",
        `the source package is ${src.source}/${src.version}, not ${args.source}/${args.version}`,
      );
    }

    const { config } = await resolveTag(deps.db.kysely, args.buildTag);
    const plan = planArches(config.arches ?? [], src.architectures, args.archOverride);
    const archSubtasks = plan.map((p) => {
      const a: BuildArchArgs = {
        buildId: args.buildId,
        source: src.source,
        version: src.version,
        arch: p.arch,
        dep: p.dep,
        indep: p.indep,
        dsc: src.dsc,
        files: src.files,
      };
      return { label: `buildArch-${p.arch}`, method: "buildArch", args: a, arch: p.taskArch };
    });
    if (archSubtasks.length > 0 && ctx.task.attempts <= 1)
      ctx.log(`building for ${plan.map((p) => p.arch).join(", ")}\n`);
    const archStage = await stage(ctx, archSubtasks);
    if (!archStage) return { suspend: true };
    await failOnBad(deps, ctx, archStage, archStage);

    await withWriteTx(deps.db, (trx) =>
      importBuild(trx, args.buildId, [srcStage[0]!.id, ...archStage.map((t) => t.id)], deps.clock.now()),
    );
    const nvr = `${args.source}/${args.version}`;
    if (!args.scratch) {
      const tagStage = await stage(ctx, [
        {
          label: "tagBuild",
          method: "tagBuild",
          args: { tag: args.destTag, buildId: args.buildId },
          arch: "noarch",
        },
      ]);
      if (!tagStage) return { suspend: true };
      await failOnBad(deps, ctx, tagStage, tagStage);
    }
    ctx.log(`built ${nvr}${args.scratch ? " (scratch)" : ` and tagged it into ${args.destTag}`}\n`);
    return { result: { buildId: args.buildId, nvr, arches: plan.map((p) => p.arch) } };
  };
}
