import path from "node:path";
import type { FastifyInstance } from "fastify";
import { gcPoolLock, listGcPrefixes } from "../../../publish/collect-garbage.js";
import { createTask } from "../../../tasks/create-task.js";
import { getTask } from "../../../tasks/task-queries.js";
import { toTaskJson, type TaskRow } from "../../../tasks/types.js";
import { requireAdmin } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { awaitTask } from "../../repo-tasks.js";

export interface QueueGcInput {
  owner: string;
  dryRun?: boolean;
  /** Blobs and package rows younger than this are kept (default one hour). */
  minAgeSeconds?: number;
}

/**
 * Queues a `gc` task holding `pool:PREFIX` exclusive on every prefix there is now: it waits for
 * the publishes before it, and those after it wait for it. A prefix that appears later is
 * swept by the next collection.
 */
export async function queueGc(deps: HubDeps, input: QueueGcInput): Promise<TaskRow> {
  const prefixes = await listGcPrefixes(deps.db.kysely, path.join(deps.config.data, "public"));
  return createTask(deps, {
    method: "gc",
    args: {
      dryRun: input.dryRun === true,
      ...(input.minAgeSeconds !== undefined ? { minAgeSeconds: input.minAgeSeconds } : {}),
    },
    owner: input.owner,
    locks: prefixes.map(gcPoolLock),
  });
}

/**
 * The hub's timer: one collection every `gc_interval` seconds, unless one is still queued or
 * running (a slow collection is not stacked up behind itself).
 */
export async function queueScheduledGc(deps: HubDeps): Promise<TaskRow | undefined> {
  const pending = await deps.db.kysely
    .selectFrom("tasks")
    .select("id")
    .where("method", "=", "gc")
    .where("state", "in", ["free", "assigned", "open"])
    .executeTakeFirst();
  if (pending) return undefined;
  return queueGc(deps, { owner: "kiln" });
}

/** POST /api/v1/gc (admin): collect unreferenced pool files, packages, blobs and upload areas. */
export function registerGcRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  app.post<{ Querystring: { dryRun?: boolean; async?: boolean; minAge?: number } }>(
    "/api/v1/gc",
    {
      schema: {
        summary:
          "Collect garbage (admin): pool files no generation on disk lists, packages and blobs nothing refers to, old upload areas",
        tags: ["gc"],
        querystring: {
          type: "object",
          properties: {
            dryRun: { type: "boolean", description: "report what would go; remove nothing" },
            async: { type: "boolean", description: "answer 202 with the task at once" },
            minAge: {
              type: "integer",
              minimum: 0,
              description: "keep blobs and package rows younger than this many seconds (default 3600)",
            },
          },
        },
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      const task = await queueGc(deps, {
        owner: p.user?.name ?? "admin",
        dryRun: req.query.dryRun === true,
        ...(req.query.minAge !== undefined ? { minAgeSeconds: req.query.minAge } : {}),
      });
      if (req.query.async) return reply.status(202).send({ task: toTaskJson(task) });
      const result = await awaitTask(deps, task.id);
      return reply.status(200).send({ task: toTaskJson(await getTask(deps, task.id)), result });
    },
  );
}
