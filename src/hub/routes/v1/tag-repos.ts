import type { FastifyInstance } from "fastify";
import { currentTagRepo, listTagRepos, newRepoTasks, queueNewRepo } from "../../../builds/tag-repos.js";
import { getTagRow } from "../../../builds/tag-store.js";
import { KilnError } from "../../../errors/catalogue.js";
import { ACTIVE_STATES, toTaskJson } from "../../../tasks/types.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";

const tagParams = {
  type: "object",
  properties: { name: { type: "string", maxLength: 128 } },
  required: ["name"],
} as const;

/** Tag repos (Koji's repos): the current one, the history, and regenerating one now. */
export function registerTagRepoRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const db = deps.db.kysely;
  const tags = ["tags"];

  app.get<{ Params: { name: string } }>(
    "/api/v1/tags/:name/repo",
    { schema: { summary: "The tag's current (ready) repository", tags, params: tagParams } },
    async (req) => {
      requireAuth(req);
      const tag = await getTagRow(db, req.params.name);
      const repo = await currentTagRepo(db, tag.name);
      if (repo) return repo;
      const [pending] = await newRepoTasks(db, tag.name, ACTIVE_STATES);
      throw new KilnError(
        "TAG_REPO_NOT_FOUND",
        pending
          ? `tag ${tag.name} has no ready repo yet; task ${pending.id} is making one (\`kiln wait-repo ${tag.name}\` waits for it)`
          : `tag ${tag.name} has no ready repo; \`kiln tag regen-repo ${tag.name}\` makes one`,
        { tag: tag.name, ...(pending ? { task: pending.id } : {}) },
      );
    },
  );

  app.get<{ Params: { name: string }; Querystring: { limit?: number } }>(
    "/api/v1/tags/:name/repos",
    {
      schema: {
        summary: "The tag's repositories, newest first (ready, expired, deleted, failed)",
        tags,
        params: tagParams,
        querystring: {
          type: "object",
          properties: { limit: { type: "integer", minimum: 1, maximum: 1000 } },
        },
      },
    },
    async (req) => {
      requireAuth(req);
      return listTagRepos(db, req.params.name, { limit: req.query.limit ?? 100 });
    },
  );

  app.post<{ Params: { name: string } }>(
    "/api/v1/tags/:name/repo",
    {
      schema: {
        summary: "Regenerate the tag's repository: queues a newRepo task (or answers the one queued)",
        tags,
        params: tagParams,
      },
    },
    async (req, reply) => {
      const p = requireUser(req);
      const task = await queueNewRepo(deps, req.params.name, { owner: p.user.name });
      return reply.status(202).send({ task: toTaskJson(task) });
    },
  );
}
