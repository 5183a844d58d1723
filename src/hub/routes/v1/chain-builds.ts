import type { FastifyInstance } from "fastify";
import {
  chainReport,
  duplicateNvrs,
  MAX_CHAIN_BUILDS,
  pathsToDest,
  visibleThrough,
  type ChainBuildArgs,
  type ChainEntry,
} from "../../../builds/chain-report.js";
import {
  assertDestPermission,
  assertMayBuild,
  assertNotBuilt,
  identifyUpload,
} from "../../../builds/submit-build.js";
import { getTagRow, getTarget, resolveTag, type TagRow } from "../../../builds/tag-store.js";
import type { ChainBuildJson, CreateChainBuildRequest, TargetJson } from "../../../client/types.js";
import type { EngineConfig } from "../../../config/config.js";
import type { Principal } from "../../../db/tokens.js";
import { KilnError } from "../../../errors/catalogue.js";
import { createTask, validatePriority } from "../../../tasks/create-task.js";
import { getTask } from "../../../tasks/task-queries.js";
import { toTaskJson, type TaskJson } from "../../../tasks/types.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { loadSubtasks } from "../../handlers/chain-build.js";
import { idParams } from "./schemas.js";

/** What a chain may spend waiting for each group's repository, on top of the group's builds. */
const REPO_WAIT_ALLOWANCE_S = 3600;

/**
 * The chain's own timeout: `[engine.timeouts] chainBuild` when set, else a build's timeout and an
 * hour of repository wait per group (a waiting task's clock runs from its first start).
 */
export function chainTimeout(engine: EngineConfig, groups: number): number {
  const own = engine.timeouts.chainBuild;
  if (own !== undefined) return own;
  const build = engine.timeouts.build ?? engine.timeouts.default ?? 7200;
  return groups * (build + REPO_WAIT_ALLOWANCE_S);
}

/** The shape of a chain: 1..N groups of 1..N builds, at most MAX_CHAIN_BUILDS in all. */
function checkShape(groups: CreateChainBuildRequest["groups"]): void {
  if (groups.length === 0) throw new KilnError("VALIDATION_FAILED", "a chain build needs at least one group");
  const empty = groups.findIndex((g) => g.length === 0);
  if (empty !== -1) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `group ${empty + 1} of the chain is empty; give it a source or drop it`,
    );
  }
  const total = groups.reduce((n, g) => n + g.length, 0);
  if (total > MAX_CHAIN_BUILDS) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `a chain build may hold at most ${MAX_CHAIN_BUILDS} builds, not ${total}; split it into several chains`,
    );
  }
}

/**
 * Refuses a target whose build tag does not inherit its destination tag (as Koji does); returns
 * the destination tag and the package filters on the ways to it, to check each package against.
 */
async function destPaths(
  deps: HubDeps,
  target: TargetJson,
): Promise<{ dest: TagRow; paths: (readonly string[])[] }> {
  const [{ tag: buildTag, walk }, dest] = await Promise.all([
    resolveTag(deps.db.kysely, target.buildTag),
    getTagRow(deps.db.kysely, target.destTag),
  ]);
  const paths = pathsToDest(walk, buildTag.id, dest.id);
  if (paths.length === 0) {
    throw new KilnError(
      "CHAIN_TARGET_UNUSABLE",
      `target ${target.name} cannot chain builds: its build tag ${target.buildTag} does not inherit its destination tag ${target.destTag}, so no group could build against the one before; make ${target.destTag} a parent of ${target.buildTag} (\`kiln tag add-parent ${target.buildTag} ${target.destTag}\`) or use another target`,
      { target: target.name, buildTag: target.buildTag, destTag: target.destTag },
    );
  }
  return { dest, paths };
}

/**
 * Every check POST /api/v1/builds makes, for every source of the chain, before anything is
 * created; plus those only a chain needs: the target can chain, no version twice, and no
 * package filtered out on the way from the destination tag to the build tag.
 */
async function checkChain(
  deps: HubDeps,
  p: Principal,
  body: CreateChainBuildRequest,
): Promise<ChainBuildArgs> {
  checkShape(body.groups);
  if (body.priority !== undefined) validatePriority(body.priority);
  const target = await getTarget(deps.db.kysely, body.target);
  const { dest, paths } = await destPaths(deps, target);
  await assertDestPermission(deps, p, dest);
  const groups: ChainEntry[][] = [];
  for (const group of body.groups) {
    const entries: ChainEntry[] = [];
    for (const item of group) {
      const ident = await identifyUpload(deps, item);
      entries.push({ ...ident, upload: item.upload, input: item.source });
    }
    groups.push(entries);
  }
  const twice = duplicateNvrs(groups);
  if (twice.length > 0) {
    throw new KilnError(
      "CHAIN_DUPLICATE_BUILD",
      `the chain builds ${twice.join(", ")} more than once; a version can be built once`,
      { nvrs: twice },
    );
  }
  for (const e of groups.flat()) {
    await assertMayBuild(deps, p, target, dest, e, { force: body.force === true });
    if (!visibleThrough(paths, e.source)) {
      throw new KilnError(
        "CHAIN_TARGET_UNUSABLE",
        `${target.buildTag} inherits ${target.destTag} through a package filter that leaves out ${e.source}, so later groups could not build against it; widen the filter, or build ${e.source} with \`kiln build\``,
        { target: target.name, package: e.source },
      );
    }
    await assertNotBuilt(deps.db.kysely, e);
  }
  const { id, name, buildTag, destTag } = target;
  return { target: { id, name, buildTag, destTag }, groups };
}

/** The chain's report as the API answers it. */
export function chainBuildJson(task: TaskJson, subtasks: readonly TaskJson[]): ChainBuildJson {
  const args = task.args as ChainBuildArgs;
  return {
    task,
    target: args.target.name,
    buildTag: args.target.buildTag,
    destTag: args.target.destTag,
    ...chainReport(args, subtasks, task.state),
  };
}

const sourceSchema = {
  type: "object",
  properties: { type: { type: "string", enum: ["tarball", "dsc"] }, file: { type: "string" } },
  required: ["type", "file"],
} as const;

/** Chain builds (Koji's chain-build): submit one, and follow it. */
export function registerChainBuildRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const tags = ["builds"];

  app.post<{ Body: CreateChainBuildRequest }>(
    "/api/v1/chain-builds",
    {
      schema: {
        summary: "Build groups of source packages in order, each group against the builds of the one before",
        tags,
        body: {
          type: "object",
          properties: {
            target: { type: "string" },
            groups: {
              type: "array",
              items: {
                type: "array",
                items: {
                  type: "object",
                  properties: { upload: { type: "string" }, source: sourceSchema },
                  required: ["upload", "source"],
                },
              },
            },
            priority: {},
            force: { type: "boolean" },
          },
          required: ["target", "groups"],
        },
      },
    },
    async (req, reply) => {
      const p = requireUser(req);
      const body = req.body;
      let args: ChainBuildArgs;
      try {
        args = await checkChain(deps, p, body);
      } catch (err) {
        // Refused: nothing is kept, not even the uploads.
        for (const item of body.groups.flat()) await deps.uploads.remove(item.upload).catch(() => false);
        throw err;
      }
      const task = await createTask(deps, {
        method: "chainBuild",
        args,
        owner: p.user.name,
        timeout: chainTimeout(deps.engine, args.groups.length),
        ...(body.priority !== undefined ? { priority: body.priority } : {}),
      });
      return reply.status(201).send(chainBuildJson(toTaskJson(task), []));
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/chain-builds/:id",
    {
      schema: {
        summary: "A chain build by its task id: every build's group, state and error",
        tags,
        params: idParams,
      },
    },
    async (req) => {
      requireAuth(req);
      const row = await getTask(deps, req.params.id);
      if (row.method !== "chainBuild") {
        throw new KilnError("TASK_NOT_FOUND", `task ${row.id} is a ${row.method} task, not a chain build`);
      }
      return chainBuildJson(toTaskJson(row), await loadSubtasks(deps.db.kysely, row.id));
    },
  );
}
