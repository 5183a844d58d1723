import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { awaitTask, queueRepoTask, type RepoTaskInput } from "../../repo-tasks.js";
import { getTask } from "../../../tasks/task-queries.js";
import { assertFileName } from "../../../artifacts/upload-area.js";
import { toTaskJson } from "../../../tasks/types.js";
import { KilnError } from "../../../errors/catalogue.js";
import { poolLock, publishLock, repoLock, snapshotLock } from "../../../publish/methods.js";
import { assertPrefix } from "../../../publish/apply-publication.js";
import {
  createRepo,
  editRepo,
  getRepo,
  listRepos,
  repoPackages,
  toRepoJson,
} from "../../../publish/repo-store.js";
import {
  diffPackages,
  getSnapshot,
  listSnapshots,
  snapshotPackages,
  toSnapshotJson,
} from "../../../publish/snapshot-store.js";
import {
  generationHistory,
  getPublication,
  listPublications,
  toPublicationJson,
  validatePublicationSpec,
  type PublicationSpec,
  type SourceKind,
} from "../../../publish/publication-store.js";
import { filterPackages, type SnapshotSource } from "../../../publish/repo-ops.js";
import { publicationsOfBuild } from "../../../publish/build-publications.js";
import type { PackageRecord } from "../../../publish/package-store.js";

const nameParams = {
  type: "object",
  properties: { name: { type: "string", maxLength: 200 } },
  required: ["name"],
} as const;
const distParams = {
  type: "object",
  properties: { dist: { type: "string", maxLength: 200 } },
  required: ["dist"],
} as const;
const asyncQuery = {
  async: { type: "boolean" },
} as const;

export interface PackageJson {
  key: string;
  name: string;
  version: string;
  architecture: string;
  type: string;
  source: string;
  files: { name: string; size: number; sha256: string }[];
}

export function toPackageJson(p: PackageRecord): PackageJson {
  return {
    key: p.key,
    name: p.name,
    version: p.version,
    architecture: p.arch,
    type: p.kind === "dsc" ? "source" : p.kind,
    source: p.source,
    files: p.files.map((f) => ({ name: f.name, size: f.size, sha256: f.sha256 })),
  };
}

/**
 * Runs a repository task: queued behind conflicting work, then (unless `?async=true`) waited
 * for, so a plain call answers with the outcome and never with "busy".
 */
async function runTask(
  deps: HubDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  input: Omit<RepoTaskInput, "owner">,
): Promise<unknown> {
  const p = requireUser(req);
  const task = await queueRepoTask(deps, { ...input, owner: p.user.name });
  const q = req.query as { async?: boolean };
  if (q.async) return reply.status(202).send({ task: toTaskJson(task) });
  const result = await awaitTask(deps, task.id);
  return reply.status(200).send({ task: toTaskJson(await getTask(deps, task.id)), result });
}

const contentsQuerySchema = {
  type: "object",
  properties: { withPackages: { type: "boolean" }, q: { type: "string", maxLength: 4000 } },
} as const;

/** The `packages` of a repo or snapshot when asked for (all, or those the query `q` matches). */
function contentsOut(
  list: PackageRecord[],
  query: { withPackages?: boolean; q?: string },
): { packages?: PackageJson[] } {
  if (!query.withPackages && !query.q) return {};
  return { packages: (query.q ? filterPackages(list, query.q) : list).map(toPackageJson) };
}

/** Local repos, snapshots and publications (the native API; /api has the Aptly-compatible one). */
export function registerRepoRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const db = deps.db.kysely;

  // --- Repos ---
  const repoTags = ["repos"];
  app.get("/api/v1/repos", { schema: { summary: "List local repos", tags: repoTags } }, async (req) => {
    requireAuth(req);
    return (await listRepos(db)).map((r) => toRepoJson(r, r.package_count));
  });

  app.post<{ Body: { name: string; comment?: string; distribution?: string; component?: string } }>(
    "/api/v1/repos",
    {
      schema: {
        summary: "Create a local repo",
        tags: repoTags,
        body: {
          type: "object",
          properties: {
            name: { type: "string" },
            comment: { type: "string", maxLength: 2000 },
            distribution: { type: "string" },
            component: { type: "string" },
          },
          required: ["name"],
          additionalProperties: false,
        },
      },
    },
    async (req, reply) => {
      requireUser(req);
      const row = await createRepo(db, req.body, deps.clock.now());
      return reply.status(201).send(toRepoJson(row, 0));
    },
  );

  app.get<{ Params: { name: string }; Querystring: { withPackages?: boolean; q?: string } }>(
    "/api/v1/repos/:name",
    {
      schema: {
        summary: "Show a local repo (with its packages on request, filtered by a package query)",
        tags: repoTags,
        params: nameParams,
        querystring: contentsQuerySchema,
      },
    },
    async (req) => {
      requireAuth(req);
      const repo = await getRepo(db, req.params.name);
      const pkgs = await repoPackages(db, repo.id);
      return {
        ...toRepoJson(repo, pkgs.length),
        ...contentsOut(pkgs, req.query),
      };
    },
  );

  app.patch<{
    Params: { name: string };
    Body: { comment?: string; distribution?: string; component?: string };
  }>(
    "/api/v1/repos/:name",
    {
      schema: {
        summary: "Edit a local repo's comment, default distribution and component",
        tags: repoTags,
        params: nameParams,
        body: {
          type: "object",
          properties: {
            comment: { type: "string", maxLength: 2000 },
            distribution: { type: "string" },
            component: { type: "string" },
          },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      requireUser(req);
      return toRepoJson(await editRepo(db, req.params.name, req.body));
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { force?: boolean; async?: boolean } }>(
    "/api/v1/repos/:name",
    {
      schema: {
        summary: "Drop a local repo (refused while published, unless forced)",
        tags: repoTags,
        params: nameParams,
        querystring: { type: "object", properties: { force: { type: "boolean" }, ...asyncQuery } },
      },
    },
    async (req, reply) => {
      await getRepo(db, req.params.name);
      return runTask(deps, req, reply, {
        method: "repoDrop",
        args: { repo: req.params.name, force: req.query.force === true },
        locks: [repoLock(req.params.name)],
      });
    },
  );

  app.post<{
    Params: { name: string };
    Querystring: { async?: boolean };
    Body: {
      upload: string;
      files?: string[];
      forceReplace?: boolean;
      removeUpload?: "all" | "added" | "none";
    };
  }>(
    "/api/v1/repos/:name/add",
    {
      schema: {
        summary: "Add the .deb/.udeb/.dsc files of an upload area",
        tags: repoTags,
        params: nameParams,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: {
            upload: { type: "string", maxLength: 200 },
            files: { type: "array", items: { type: "string", maxLength: 255 }, maxItems: 10000 },
            forceReplace: { type: "boolean" },
            removeUpload: { type: "string", enum: ["all", "added", "none"] },
          },
          required: ["upload"],
          additionalProperties: false,
        },
      },
    },
    async (req, reply) => {
      await getRepo(db, req.params.name);
      for (const f of req.body.files ?? []) assertFileName(f);
      if (!(await deps.uploads.exists(req.body.upload))) {
        throw new KilnError("UPLOAD_NOT_FOUND", `no upload area "${req.body.upload}"`);
      }
      return runTask(deps, req, reply, {
        method: "repoAdd",
        args: { repo: req.params.name, ...req.body },
        locks: [repoLock(req.params.name)],
      });
    },
  );

  app.post<{ Params: { name: string }; Querystring: { async?: boolean }; Body: { query: string } }>(
    "/api/v1/repos/:name/remove",
    {
      schema: {
        summary: "Remove the packages a query matches",
        tags: repoTags,
        params: nameParams,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: { query: { type: "string", minLength: 1, maxLength: 4000 } },
          required: ["query"],
        },
      },
    },
    async (req, reply) => {
      await getRepo(db, req.params.name);
      filterPackages([], req.body.query); // a bad query fails here, before anything is queued
      return runTask(deps, req, reply, {
        method: "repoRemove",
        args: { repo: req.params.name, query: req.body.query },
        locks: [repoLock(req.params.name)],
      });
    },
  );

  app.post<{
    Params: { name: string };
    Querystring: { async?: boolean };
    Body: { to: string; query: string; move?: boolean; forceReplace?: boolean };
  }>(
    "/api/v1/repos/:name/copy",
    {
      schema: {
        summary: "Copy (or move) the packages a query matches into another repo",
        tags: repoTags,
        params: nameParams,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: {
            to: { type: "string" },
            query: { type: "string", minLength: 1, maxLength: 4000 },
            move: { type: "boolean" },
            forceReplace: { type: "boolean" },
          },
          required: ["to", "query"],
        },
      },
    },
    async (req, reply) => {
      await getRepo(db, req.params.name);
      await getRepo(db, req.body.to);
      filterPackages([], req.body.query);
      return runTask(deps, req, reply, {
        method: "repoCopy",
        args: {
          from: req.params.name,
          to: req.body.to,
          query: req.body.query,
          move: req.body.move === true,
          forceReplace: req.body.forceReplace === true,
        },
        locks: [repoLock(req.params.name, req.body.move === true), repoLock(req.body.to)],
      });
    },
  );

  app.post<{
    Params: { name: string };
    Querystring: { async?: boolean };
    Body: { tag: string; event?: number; forceReplace?: boolean };
  }>(
    "/api/v1/repos/:name/import-tag",
    {
      schema: {
        summary: "Add a tag's latest builds (through inheritance, optionally as of an event)",
        tags: repoTags,
        params: nameParams,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: {
            tag: { type: "string" },
            event: { type: "integer", minimum: 1 },
            forceReplace: { type: "boolean" },
          },
          required: ["tag"],
        },
      },
    },
    async (req, reply) => {
      await getRepo(db, req.params.name);
      return runTask(deps, req, reply, {
        method: "repoImportTag",
        args: { repo: req.params.name, ...req.body },
        locks: [repoLock(req.params.name)],
      });
    },
  );

  // --- Snapshots ---
  const snapTags = ["snapshots"];
  app.get("/api/v1/snapshots", { schema: { summary: "List snapshots", tags: snapTags } }, async (req) => {
    requireAuth(req);
    return (await listSnapshots(db)).map((s) => toSnapshotJson(s, s.package_count));
  });

  app.post<{
    Querystring: { async?: boolean };
    Body: { name: string; description?: string; from: SnapshotSource };
  }>(
    "/api/v1/snapshots",
    {
      schema: {
        summary: "Make a snapshot of a repo, a tag (as of an event), a merge or a filter",
        tags: snapTags,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: {
            name: { type: "string" },
            description: { type: "string", maxLength: 2000 },
            from: {
              type: "object",
              properties: {
                kind: { type: "string", enum: ["repo", "tag", "merge", "filter", "keys"] },
                repo: { type: "string" },
                tag: { type: "string" },
                event: { type: "integer", minimum: 1 },
                sources: { type: "array", items: { type: "string" } },
                latest: { type: "boolean" },
                source: { type: "string" },
                query: { type: "string", maxLength: 4000 },
                keys: { type: "array", items: { type: "string" } },
              },
              required: ["kind"],
            },
          },
          required: ["name", "from"],
        },
      },
    },
    async (req, reply) => {
      const from = req.body.from;
      const locks = [snapshotLock(req.body.name)];
      if (from.kind === "repo") locks.push(repoLock(from.repo, false));
      if (from.kind === "filter") filterPackages([], from.query);
      return runTask(deps, req, reply, { method: "snapshotCreate", args: { ...req.body }, locks });
    },
  );

  app.get<{ Params: { name: string }; Querystring: { withPackages?: boolean; q?: string } }>(
    "/api/v1/snapshots/:name",
    {
      schema: {
        summary: "Show a snapshot (with its packages on request)",
        tags: snapTags,
        params: nameParams,
        querystring: contentsQuerySchema,
      },
    },
    async (req) => {
      requireAuth(req);
      const snap = await getSnapshot(db, req.params.name);
      const pkgs = await snapshotPackages(db, snap.id);
      return {
        ...toSnapshotJson(snap, pkgs.length),
        ...contentsOut(pkgs, req.query),
      };
    },
  );

  app.get<{ Params: { name: string; other: string } }>(
    "/api/v1/snapshots/:name/diff/:other",
    { schema: { summary: "What differs between two snapshots", tags: snapTags } },
    async (req) => {
      requireAuth(req);
      const a = await getSnapshot(db, req.params.name);
      const b = await getSnapshot(db, req.params.other);
      return diffPackages(await snapshotPackages(db, a.id), await snapshotPackages(db, b.id));
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { force?: boolean; async?: boolean } }>(
    "/api/v1/snapshots/:name",
    {
      schema: {
        summary: "Drop a snapshot (refused while published, unless forced)",
        tags: snapTags,
        params: nameParams,
        querystring: { type: "object", properties: { force: { type: "boolean" }, ...asyncQuery } },
      },
    },
    async (req, reply) => {
      await getSnapshot(db, req.params.name);
      return runTask(deps, req, reply, {
        method: "snapshotDrop",
        args: { name: req.params.name, force: req.query.force === true },
        locks: [snapshotLock(req.params.name)],
      });
    },
  );

  // --- Where a build is published ---
  app.get<{ Params: { id: number } }>(
    "/api/v1/builds/:id/publications",
    {
      schema: {
        summary:
          "The tag-tracking publications that serve a build, and whether their live generation has it yet",
        tags: ["builds"],
        params: { type: "object", properties: { id: { type: "integer" } }, required: ["id"] },
      },
    },
    async (req) => {
      requireAuth(req);
      return publicationsOfBuild(deps, req.params.id);
    },
  );

  // --- Publications ---
  const pubTags = ["publish"];
  const prefixQuery = { prefix: { type: "string", maxLength: 200 } } as const;
  const prefixOf = (q: { prefix?: string }) => {
    const prefix = q.prefix ?? ".";
    assertPrefix(prefix);
    return prefix;
  };
  const sourceLocks = (kind: SourceKind, names: string[]) =>
    kind === "local"
      ? names.map((n) => repoLock(n, false))
      : kind === "snapshot"
        ? names.map((n) => snapshotLock(n, false))
        : [];

  app.get("/api/v1/publish", { schema: { summary: "List publications", tags: pubTags } }, async (req) => {
    requireAuth(req);
    return (await listPublications(db)).map((r) => toPublicationJson(r));
  });

  app.post<{ Querystring: { async?: boolean }; Body: PublicationSpec }>(
    "/api/v1/publish",
    {
      schema: {
        summary: "Publish a repo, snapshots or a tag at a prefix and distribution",
        tags: pubTags,
        querystring: { type: "object", properties: asyncQuery },
        body: {
          type: "object",
          properties: {
            prefix: { type: "string" },
            distribution: { type: "string" },
            sourceKind: { type: "string", enum: ["local", "snapshot", "tag"] },
            sources: {
              type: "array",
              minItems: 1,
              maxItems: 50,
              items: {
                type: "object",
                properties: { component: { type: "string" }, name: { type: "string" } },
                required: ["component", "name"],
              },
            },
            architectures: { type: "array", items: { type: "string" } },
            origin: { type: "string", maxLength: 200 },
            label: { type: "string", maxLength: 200 },
            skipSigning: { type: "boolean" },
          },
          required: ["prefix", "distribution", "sourceKind", "sources"],
          additionalProperties: false,
        },
      },
    },
    async (req, reply) => {
      const spec = req.body;
      validatePublicationSpec(spec);
      return runTask(deps, req, reply, {
        method: "publishCreate",
        args: { spec },
        locks: [
          publishLock(spec.prefix, spec.distribution),
          poolLock(spec.prefix),
          ...sourceLocks(
            spec.sourceKind,
            spec.sources.map((s) => s.name),
          ),
        ],
      });
    },
  );

  app.get<{ Params: { dist: string }; Querystring: { prefix?: string } }>(
    "/api/v1/publish/:dist",
    {
      schema: {
        summary: "Show a publication with its history of generations",
        tags: pubTags,
        params: distParams,
        querystring: { type: "object", properties: prefixQuery },
      },
    },
    async (req) => {
      requireAuth(req);
      const row = await getPublication(db, prefixOf(req.query), req.params.dist);
      return toPublicationJson(row, await generationHistory(db, row.id));
    },
  );

  const pubAction = (
    action: "update" | "switch" | "rollback",
    summary: string,
    bodySchema: Record<string, unknown>,
    build: (
      prefix: string,
      dist: string,
      body: Record<string, unknown>,
      kind: SourceKind,
      names: string[],
    ) => Omit<RepoTaskInput, "owner">,
  ) =>
    app.post<{
      Params: { dist: string };
      Querystring: { prefix?: string; async?: boolean };
      Body: Record<string, unknown>;
    }>(
      `/api/v1/publish/:dist/${action}`,
      {
        schema: {
          summary,
          tags: pubTags,
          params: distParams,
          querystring: { type: "object", properties: { ...prefixQuery, ...asyncQuery } },
          body: bodySchema,
        },
      },
      async (req, reply) => {
        const prefix = prefixOf(req.query);
        const row = await getPublication(db, prefix, req.params.dist);
        const names = (JSON.parse(row.sources) as { name: string }[]).map((s) => s.name);
        return runTask(
          deps,
          req,
          reply,
          build(prefix, req.params.dist, req.body ?? {}, row.source_kind as SourceKind, names),
        );
      },
    );

  pubAction(
    "update",
    "Republish from the sources' current contents",
    { type: ["object", "null"] },
    (prefix, dist, _b, kind, names) => ({
      method: "publishUpdate",
      args: { prefix, distribution: dist },
      locks: [publishLock(prefix, dist), poolLock(prefix), ...sourceLocks(kind, names)],
    }),
  );
  pubAction(
    "switch",
    "Publish other snapshots at the same place",
    {
      type: "object",
      properties: {
        sources: {
          type: "array",
          minItems: 1,
          items: {
            type: "object",
            properties: { component: { type: "string" }, name: { type: "string" } },
            required: ["component", "name"],
          },
        },
      },
      required: ["sources"],
    },
    (prefix, dist, body) => {
      const sources = body.sources as { component: string; name: string }[];
      return {
        method: "publishSwitch",
        args: { prefix, distribution: dist, sources },
        locks: [
          publishLock(prefix, dist),
          poolLock(prefix),
          ...sourceLocks(
            "snapshot",
            sources.map((s) => s.name),
          ),
        ],
      };
    },
  );
  pubAction(
    "rollback",
    "Serve an earlier generation again (the one live before, or `to`)",
    { type: ["object", "null"], properties: { to: { type: "integer", minimum: 1 } } },
    (prefix, dist, body) => ({
      method: "publishRollback",
      args: { prefix, distribution: dist, ...(typeof body.to === "number" ? { to: body.to } : {}) },
      locks: [publishLock(prefix, dist)],
    }),
  );

  app.delete<{ Params: { dist: string }; Querystring: { prefix?: string; async?: boolean } }>(
    "/api/v1/publish/:dist",
    {
      schema: {
        summary: "Stop publishing a distribution",
        tags: pubTags,
        params: distParams,
        querystring: { type: "object", properties: { ...prefixQuery, ...asyncQuery } },
      },
    },
    async (req, reply) => {
      const prefix = prefixOf(req.query);
      await getPublication(db, prefix, req.params.dist);
      return runTask(deps, req, reply, {
        method: "publishDrop",
        args: { prefix, distribution: req.params.dist },
        locks: [publishLock(prefix, req.params.dist), poolLock(prefix)],
      });
    },
  );
}
