import type { FastifyInstance } from "fastify";
import {
  BUILDROOT_EXTRA_KEY,
  createBuildroot,
  deleteBuildroot,
  getBuildroot,
  listBuildroots,
} from "../../../builds/buildroot-store.js";
import { tagsWithExtra } from "../../../builds/tag-store.js";
import type { BuildrootDetailJson, CreateBuildrootRequest } from "../../../client/types.js";
import { detectArches } from "../../../debian/native-arch.js";
import { requireAdmin, requireAuth } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { nameParams, taskSchema } from "./schemas.js";

const nullableString = { type: ["string", "null"] } as const;

const buildrootSchema = {
  type: "object",
  additionalProperties: true,
  properties: {
    id: { type: "integer" },
    name: { type: "string" },
    suite: { type: "string" },
    mirror: { type: "string" },
    arch: { type: "string" },
    include: { type: "array", items: { type: "string" } },
    state: { type: "string", enum: ["building", "ready", "failed", "deleted"] },
    sha256: nullableString,
    size: { type: ["integer", "null"] },
    info: {},
    taskId: { type: ["integer", "null"] },
    error: nullableString,
    owner: { type: "string" },
    createdAt: { type: "string" },
    readyAt: nullableString,
    deletedAt: nullableString,
  },
} as const;

/** The hub's own architecture: what a base is made for when the request names none. */
let hubArch: string | undefined;
function defaultArch(): string {
  hubArch ??= detectArches()[0] ?? "amd64";
  return hubArch;
}

/** Buildroot bases: the minimal trees builds start from (issue 7). */
export function registerBuildrootRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const tags = ["buildroots"];

  app.post<{ Body: CreateBuildrootRequest }>(
    "/api/v1/buildroots",
    {
      schema: {
        summary: "Make a buildroot base (admin): queues a createBuildroot task on the buildroot channel",
        tags,
        body: {
          type: "object",
          properties: {
            name: { type: "string" },
            suite: { type: "string" },
            mirror: { type: "string" },
            arch: { type: "string" },
            include: { type: "array", items: { type: "string" } },
          },
          required: ["name", "suite", "mirror"],
        },
        response: {
          201: {
            type: "object",
            properties: { buildroot: buildrootSchema, task: taskSchema },
          },
        },
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      const input = { ...req.body, arch: req.body.arch ?? defaultArch() };
      const created = await createBuildroot(deps, input, { name: p.user?.name ?? "admin" });
      return reply.status(201).send(created);
    },
  );

  app.get<{ Querystring: { all?: boolean } }>(
    "/api/v1/buildroots",
    {
      schema: {
        summary: "List buildroot bases (`all=true`: deleted ones too)",
        tags,
        querystring: { type: "object", properties: { all: { type: "boolean" } } },
        response: { 200: { type: "array", items: buildrootSchema } },
      },
    },
    async (req) => {
      requireAuth(req);
      return listBuildroots(deps.db.kysely, { all: req.query.all === true });
    },
  );

  app.get<{ Params: { name: string } }>(
    "/api/v1/buildroots/:name",
    {
      schema: {
        summary: "A buildroot base and the tags whose builds use it",
        tags,
        params: nameParams,
      },
    },
    async (req): Promise<BuildrootDetailJson> => {
      requireAuth(req);
      const base = await getBuildroot(deps.db.kysely, req.params.name);
      return { ...base, tags: await tagsWithExtra(deps.db.kysely, BUILDROOT_EXTRA_KEY, base.name) };
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { force?: boolean } }>(
    "/api/v1/buildroots/:name",
    {
      schema: {
        summary:
          "Delete a buildroot base (admin): cancels it if still being made; refused while tags name it unless force",
        tags,
        params: nameParams,
        querystring: { type: "object", properties: { force: { type: "boolean" } } },
        response: { 200: buildrootSchema },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      return deleteBuildroot(deps, req.params.name, {
        name: p.user?.name ?? "admin",
        force: req.query.force === true,
      });
    },
  );
}
