import type {
  BuildArchArgs,
  BuildArchResult,
  BuildBuildrootJson,
  BuildrootRef,
  BuildSrcArgs,
  BuildSrcResult,
  TaskJson,
} from "../../client/types.js";
import { getReadyBuildroot } from "../../builds/buildroot-store.js";
import { ensureTagRepo, pinTagRepo, tagRepoPath } from "../../builds/tag-repos.js";
import { KilnError } from "../../errors/catalogue.js";
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
    const root = await buildrootFor(deps, ctx, args, config.extra.buildroot, plan);
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
        ...(root ? { buildroot: root.ref } : {}),
      };
      // Builds in a buildroot go to workers that can make one (and `all` to the base's arch).
      return root
        ? {
            label: `buildArch-${p.arch}`,
            method: "buildArch",
            args: a,
            arch: root.arch,
            channel: "buildroot",
          }
        : { label: `buildArch-${p.arch}`, method: "buildArch", args: a, arch: p.taskArch };
    });
    if (archSubtasks.length > 0 && ctx.task.attempts <= 1)
      ctx.log(`building for ${plan.map((p) => p.arch).join(", ")}\n`);
    const archStage = await stage(ctx, archSubtasks);
    if (!archStage) return { suspend: true };
    await failOnBad(deps, ctx, archStage, archStage);

    await withWriteTx(deps.db, async (trx) => {
      await importBuild(
        trx,
        args.buildId,
        [srcStage[0]!.id, ...archStage.map((t) => t.id)],
        deps.clock.now(),
      );
      if (root) {
        await trx
          .updateTable("builds")
          .set({ buildroot: JSON.stringify(buildrootRecord(root.ref, archStage)) })
          .where("id", "=", args.buildId)
          .execute();
      }
    });
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

/**
 * The buildroot of a build whose build tag names one (`extra.buildroot`, inherited): the ready
 * base and the build tag's ready repo, which the build row holds on to (an expired repo is kept
 * while a build uses it). A run again from the top finds the repo it chose the first time.
 */
async function buildrootFor(
  deps: HubDeps,
  ctx: TaskContext,
  args: BuildTaskArgs,
  name: unknown,
  plan: readonly { arch: string }[],
): Promise<{ ref: BuildrootRef; arch: string } | undefined> {
  if (name === undefined || name === null || name === "") return undefined;
  if (typeof name !== "string")
    throw new TaskFailure("VALIDATION_FAILED", `tag ${args.buildTag}: extra.buildroot must be a name`);
  let base;
  try {
    base = await getReadyBuildroot(deps.db.kysely, name);
  } catch (err) {
    if (err instanceof KilnError)
      throw new TaskFailure(err.code, `build tag ${args.buildTag} names buildroot ${name}: ${err.message}`);
    throw err;
  }
  const foreign = plan.filter((p) => p.arch !== "all" && p.arch !== base.arch).map((p) => p.arch);
  if (foreign.length > 0) {
    throw new TaskFailure(
      "VALIDATION_FAILED",
      `buildroot ${name} is for ${base.arch}, but the build needs ${foreign.join(", ")}; give tag ${args.buildTag} a base per architecture or limit its arches`,
    );
  }
  const repo = await chooseRepo(deps, ctx, args);
  if (base.sha256 === null || base.size === null)
    throw new TaskFailure("BUILDROOT_NOT_READY", `buildroot ${name} has no stored base`);
  return {
    arch: base.arch,
    ref: {
      name,
      sha256: base.sha256,
      size: base.size,
      repo: { id: repo.id, tag: args.buildTag, path: repo.path },
    },
  };
}

/** The build tag's repo this build installs from: the one it pinned before, or the ready one. */
async function chooseRepo(
  deps: HubDeps,
  ctx: TaskContext,
  args: BuildTaskArgs,
): Promise<{ id: number; path: string }> {
  const held = await deps.db.kysely
    .selectFrom("builds")
    .innerJoin("tag_repos", "tag_repos.id", "builds.tag_repo_id")
    .select(["tag_repos.id", "tag_repos.state"])
    .where("builds.id", "=", args.buildId)
    .executeTakeFirst();
  if (held && held.state !== "deleted") return { id: held.id, path: tagRepoPath(args.buildTag, held.id) };
  // Pinned in one statement that checks the repo still exists; a cleanup in between: choose again.
  for (let attempt = 0; attempt < 5; attempt++) {
    const repo = await ensureTagRepo(deps, args.buildTag, { signal: ctx.signal });
    if (await pinTagRepo(deps.db.kysely, args.buildId, repo.id)) {
      ctx.log(`Build-Depends come from ${args.buildTag}'s repo ${repo.id} (event ${repo.eventId})\n`);
      return { id: repo.id, path: repo.path };
    }
  }
  throw new TaskFailure("TAG_REPO_NOT_FOUND", `no repo of ${args.buildTag} stayed ready long enough to use`, {
    infra: true,
  });
}

/** What the build row records of its buildroot: the base, the repo, what each arch installed. */
function buildrootRecord(ref: BuildrootRef, archTasks: readonly TaskJson[]): BuildBuildrootJson {
  const arches: BuildBuildrootJson["arches"] = {};
  for (const t of archTasks) {
    const arch = (t.args as { arch?: string }).arch ?? "?";
    const r = (t.result as BuildArchResult | null)?.buildroot;
    if (r) arches[arch] = { installed: r.installed, setupSeconds: r.setupSeconds, base: r.base };
  }
  return { name: ref.name, sha256: ref.sha256, tag: ref.repo.tag, repoId: ref.repo.id, arches };
}
