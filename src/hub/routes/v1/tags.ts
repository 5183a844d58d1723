import type { FastifyInstance } from "fastify";
import {
  addParent,
  changePackages,
  createTag,
  createTarget,
  deleteTag,
  deleteTarget,
  editTarget,
  editTag,
  describeTag,
  getTagRow,
  latestInTag,
  listPackages,
  listTags,
  listTargets,
  removeParent,
  tagBuild,
  untagBuild,
  findBuildByNvr,
  type Actor,
} from "../../../builds/tag-store.js";
import { BUILDROOT_EXTRA_KEY, checkBuildrootSetting } from "../../../builds/buildroot-store.js";
import type { Principal } from "../../../db/tokens.js";
import { requireAdmin, requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { enforcePolicy } from "../../policy-check.js";

const tagParams = {
  type: "object",
  properties: { name: { type: "string", maxLength: 128 } },
  required: ["name"],
} as const;
const eventQuery = { type: "object", properties: { event: { type: "integer", minimum: 1 } } } as const;

/** A tag naming a buildroot base must name one that exists (`null` removes the setting). */
async function checkExtra(deps: HubDeps, extra: Record<string, unknown> | undefined): Promise<void> {
  const value = extra?.[BUILDROOT_EXTRA_KEY];
  if (value !== undefined && value !== null) await checkBuildrootSetting(deps.db.kysely, value);
}

function actor(p: Principal, force?: boolean): Actor {
  return {
    name: p.user?.name ?? p.host?.name ?? "?",
    isAdmin: p.role === "admin",
    ...(force ? { force } : {}),
  };
}

/** Tags, inheritance, package lists, tagging and targets: Koji's data model. */
export function registerTagRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const tags = ["tags"];

  app.get("/api/v1/tags", { schema: { summary: "List tags", tags } }, async (req) => {
    requireAuth(req);
    return listTags(deps);
  });

  app.post<{
    Body: {
      name: string;
      arches?: string[] | null;
      perm?: string | null;
      locked?: boolean;
      extra?: Record<string, unknown>;
    };
  }>(
    "/api/v1/tags",
    {
      schema: {
        summary: "Create a tag",
        tags,
        body: {
          type: "object",
          properties: {
            name: { type: "string" },
            arches: { type: ["array", "null"], items: { type: "string" } },
            perm: { type: ["string", "null"] },
            locked: { type: "boolean" },
            extra: { type: "object" },
          },
          required: ["name"],
        },
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      await checkExtra(deps, req.body.extra);
      return reply.status(201).send(await createTag(deps, req.body, actor(p)));
    },
  );

  app.get<{ Params: { name: string }; Querystring: { event?: number } }>(
    "/api/v1/tags/:name",
    {
      schema: {
        summary: "A tag with its inheritance walk and build config",
        tags,
        params: tagParams,
        querystring: eventQuery,
      },
    },
    async (req) => {
      requireAuth(req);
      return describeTag(deps, req.params.name, req.query.event);
    },
  );

  app.patch<{
    Params: { name: string };
    Body: {
      rename?: string;
      arches?: string[] | null;
      perm?: string | null;
      locked?: boolean;
      extra?: Record<string, unknown>;
      force?: boolean;
    };
  }>(
    "/api/v1/tags/:name",
    {
      schema: {
        summary: "Edit a tag (extra keys set to null are removed)",
        tags,
        params: tagParams,
        body: {
          type: "object",
          properties: {
            rename: { type: "string" },
            arches: { type: ["array", "null"], items: { type: "string" } },
            perm: { type: ["string", "null"] },
            locked: { type: "boolean" },
            extra: { type: "object" },
            force: { type: "boolean" },
          },
        },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      const { force, ...patch } = req.body;
      await checkExtra(deps, patch.extra);
      return editTag(deps, req.params.name, patch, actor(p, force));
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { force?: boolean } }>(
    "/api/v1/tags/:name",
    { schema: { summary: "Delete a tag", tags, params: tagParams } },
    async (req, reply) => {
      const p = requireAdmin(req);
      await deleteTag(deps, req.params.name, actor(p, req.query.force));
      return reply.status(204).send();
    },
  );

  app.post<{
    Params: { name: string };
    Body: {
      parent: string;
      priority: number;
      maxdepth?: number | null;
      intransitive?: boolean;
      noconfig?: boolean;
      pkgFilter?: string;
      force?: boolean;
    };
  }>(
    "/api/v1/tags/:name/parents",
    {
      schema: {
        summary: "Add an inheritance link",
        tags,
        params: tagParams,
        body: {
          type: "object",
          properties: {
            parent: { type: "string" },
            priority: { type: "integer" },
            maxdepth: { type: ["integer", "null"] },
            intransitive: { type: "boolean" },
            noconfig: { type: "boolean" },
            pkgFilter: { type: "string", maxLength: 1000 },
            force: { type: "boolean" },
          },
          required: ["parent", "priority"],
        },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      const { force, ...link } = req.body;
      await addParent(deps, req.params.name, link, actor(p, force));
      return describeTag(deps, req.params.name);
    },
  );

  app.delete<{ Params: { name: string; parent: string }; Querystring: { force?: boolean } }>(
    "/api/v1/tags/:name/parents/:parent",
    {
      schema: {
        summary: "Remove an inheritance link",
        tags,
        params: {
          type: "object",
          properties: { name: { type: "string" }, parent: { type: "string" } },
          required: ["name", "parent"],
        },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      await removeParent(deps, req.params.name, req.params.parent, actor(p, req.query.force));
      return describeTag(deps, req.params.name);
    },
  );

  app.get<{ Params: { name: string }; Querystring: { event?: number } }>(
    "/api/v1/tags/:name/packages",
    {
      schema: {
        summary: "The tag's effective package list, with where each entry comes from",
        tags,
        params: tagParams,
        querystring: eventQuery,
      },
    },
    async (req) => {
      requireAuth(req);
      return listPackages(deps, req.params.name, req.query.event);
    },
  );

  app.post<{
    Params: { name: string };
    Body: {
      action: "add" | "block" | "unblock" | "remove";
      packages: string[];
      owner?: string;
      force?: boolean;
    };
  }>(
    "/api/v1/tags/:name/packages",
    {
      schema: {
        summary: "Add, block, unblock or remove packages in the tag's own list",
        tags,
        params: tagParams,
        body: {
          type: "object",
          properties: {
            action: { type: "string", enum: ["add", "block", "unblock", "remove"] },
            packages: { type: "array", items: { type: "string" }, maxItems: 10000 },
            owner: { type: "string" },
            force: { type: "boolean" },
          },
          required: ["action", "packages"],
        },
      },
    },
    async (req) => {
      const p = requireUser(req);
      const tag = await getTagRow(deps.db.kysely, req.params.name);
      await enforcePolicy(
        deps,
        "package_list",
        p,
        {
          tag: tag.name,
          tagPerm: tag.perm,
          operation: req.body.action,
          package: req.body.packages[0] ?? null,
        },
        req.body.force,
      );
      await changePackages(deps, req.params.name, req.body, actor(p, req.body.force));
      return listPackages(deps, req.params.name);
    },
  );

  app.get<{ Params: { name: string }; Querystring: { event?: number } }>(
    "/api/v1/tags/:name/latest",
    {
      schema: {
        summary: "The latest build of each package the tag sees",
        tags,
        params: tagParams,
        querystring: eventQuery,
      },
    },
    async (req) => {
      requireAuth(req);
      return latestInTag(deps, req.params.name, req.query.event);
    },
  );

  const tagBody = {
    type: "object",
    properties: { build: { type: "string" }, force: { type: "boolean" } },
    required: ["build"],
  } as const;

  app.post<{ Params: { name: string }; Body: { build: string; force?: boolean } }>(
    "/api/v1/tags/:name/builds",
    {
      schema: {
        summary: "Tag a build (SOURCE/VERSION) into the tag",
        tags,
        params: tagParams,
        body: tagBody,
      },
    },
    async (req, reply) => {
      const p = requireUser(req);
      const tag = await getTagRow(deps.db.kysely, req.params.name);
      const build = await findBuildByNvr(deps.db.kysely, req.body.build);
      await enforcePolicy(
        deps,
        "tag",
        p,
        { tag: tag.name, tagPerm: tag.perm, operation: "tag", package: build.source, version: build.version },
        req.body.force,
      );
      const out = await tagBuild(deps, req.params.name, req.body.build, actor(p, req.body.force));
      deps.wake.notify();
      return reply.status(201).send(out);
    },
  );

  app.post<{ Params: { name: string }; Body: { build: string; force?: boolean } }>(
    "/api/v1/tags/:name/untag",
    { schema: { summary: "Remove a build from the tag", tags, params: tagParams, body: tagBody } },
    async (req, reply) => {
      const p = requireUser(req);
      const tag = await getTagRow(deps.db.kysely, req.params.name);
      const build = await findBuildByNvr(deps.db.kysely, req.body.build);
      await enforcePolicy(
        deps,
        "tag",
        p,
        {
          tag: null,
          fromtag: tag.name,
          tagPerm: tag.perm,
          operation: "untag",
          package: build.source,
          version: build.version,
        },
        req.body.force,
      );
      await untagBuild(deps, req.params.name, req.body.build, actor(p, req.body.force));
      return reply.status(204).send();
    },
  );

  app.get(
    "/api/v1/targets",
    { schema: { summary: "List build targets", tags: ["targets"] } },
    async (req) => {
      requireAuth(req);
      return listTargets(deps);
    },
  );

  app.post<{ Body: { name: string; buildTag: string; destTag: string } }>(
    "/api/v1/targets",
    {
      schema: {
        summary: "Create a build target",
        tags: ["targets"],
        body: {
          type: "object",
          properties: { name: { type: "string" }, buildTag: { type: "string" }, destTag: { type: "string" } },
          required: ["name", "buildTag", "destTag"],
        },
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      return reply.status(201).send(await createTarget(deps, req.body, actor(p)));
    },
  );

  app.patch<{
    Params: { name: string };
    Body: { retry?: number; retryOn?: string; retryPolicy?: string | null };
  }>(
    "/api/v1/targets/:name",
    {
      schema: {
        summary: "Edit a build target's retry policy",
        tags: ["targets"],
        params: tagParams,
        body: {
          type: "object",
          properties: {
            retry: { type: "integer" },
            retryOn: { type: "string", maxLength: 1000 },
            retryPolicy: { type: ["string", "null"], maxLength: 1000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      return editTarget(deps, req.params.name, req.body, actor(p), deps.config.engine.retryDefault);
    },
  );

  app.delete<{ Params: { name: string } }>(
    "/api/v1/targets/:name",
    { schema: { summary: "Delete a build target", tags: ["targets"], params: tagParams } },
    async (req, reply) => {
      const p = requireAdmin(req);
      await deleteTarget(deps, req.params.name, actor(p));
      return reply.status(204).send();
    },
  );
}
