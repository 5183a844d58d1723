import type { FastifyInstance } from "fastify";
import { createReadStream } from "node:fs";
import { access } from "node:fs/promises";
import type { CreateBuildRequest } from "../../../client/types.js";
import { artifactJson, buildJson, getBuildRow, listBuilds } from "../../../builds/build-store.js";
import type { BuildAttemptJson } from "../../../client/types.js";
import { checkBuildRequest, insertBuild } from "../../../builds/submit-build.js";
import { getTarget } from "../../../builds/tag-store.js";
import { withWriteTx } from "../../../db/database.js";
import { KilnError } from "../../../errors/catalogue.js";
import { RUNNING_STATES, toTaskJson } from "../../../tasks/types.js";
import { requireAuth, requireHost, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";

const SHA_RE = /^[0-9a-f]{64}$/;
const ARTIFACT_KINDS = ["deb", "udeb", "ddeb", "buildinfo", "changes", "dsc", "source", "log", "buildroot"];

/** Uploads, builds, blobs and worker artifacts. */
export function registerBuildRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const tags = ["builds"];

  // Raw bodies (uploads, artifacts) are streamed, never buffered.
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));

  app.post(
    "/api/v1/uploads",
    { schema: { summary: "A fresh upload area of your own", tags } },
    async (req, reply) => {
      requireUser(req);
      const area = await deps.uploads.create();
      return reply.status(201).send({ id: area.id });
    },
  );

  const uploadFileParams = {
    type: "object",
    properties: { id: { type: "string", maxLength: 128 }, name: { type: "string", maxLength: 255 } },
    required: ["id", "name"],
  } as const;

  app.put<{ Params: { id: string; name: string } }>(
    "/api/v1/uploads/:id/files/:name",
    { schema: { summary: "Stream a file into an upload area", tags, params: uploadFileParams } },
    async (req, reply) => {
      requireUser(req);
      const out = await deps.uploads.writeFile(
        req.params.id,
        req.params.name,
        req.body as NodeJS.ReadableStream,
        {
          maxBytes: deps.config.uploadLimitBytes,
        },
      );
      return reply.status(201).send(out);
    },
  );

  app.get<{ Params: { id: string; name: string } }>(
    "/api/v1/uploads/:id/files/:name",
    {
      schema: {
        summary: "Read a file of an upload area (workers fetch sources here)",
        tags,
        params: uploadFileParams,
      },
    },
    async (req, reply) => {
      requireAuth(req);
      const file = deps.uploads.filePath(req.params.id, req.params.name);
      try {
        await access(file);
      } catch {
        throw new KilnError("UPLOAD_NOT_FOUND", `no file ${req.params.name} in upload ${req.params.id}`);
      }
      return reply.type("application/octet-stream").send(createReadStream(file));
    },
  );

  app.post<{ Body: CreateBuildRequest }>(
    "/api/v1/builds",
    {
      schema: {
        summary: "Build a source package into a target",
        tags,
        body: {
          type: "object",
          properties: {
            target: { type: "string" },
            upload: { type: "string" },
            source: {
              type: "object",
              properties: { type: { type: "string", enum: ["tarball", "dsc"] }, file: { type: "string" } },
              required: ["type", "file"],
            },
            scratch: { type: "boolean" },
            priority: {},
            archOverride: { type: "array", items: { type: "string" } },
            force: { type: "boolean" },
          },
          required: ["target", "upload", "source"],
        },
      },
    },
    async (req, reply) => {
      const p = requireUser(req);
      const body = req.body;
      try {
        const target = await getTarget(deps.db.kysely, body.target);
        const checked = await checkBuildRequest(deps, p, target, body, {
          scratch: body.scratch === true,
          force: body.force === true,
        });
        const { build, task } = await withWriteTx(deps.db, (trx) =>
          insertBuild(deps, trx, {
            checked,
            owner: p.user.name,
            scratch: body.scratch === true,
            archOverride: body.archOverride ?? [],
            ...(body.priority !== undefined ? { priority: body.priority } : {}),
          }),
        );
        deps.wake.notify();
        return reply
          .status(201)
          .send({ build: await buildJson(deps.db.kysely, build), task: toTaskJson(task) });
      } catch (err) {
        // Refused: nothing is kept, not even the upload.
        await deps.uploads.remove(body.upload).catch(() => undefined);
        throw err;
      }
    },
  );

  app.get<{ Querystring: { package?: string; state?: string; limit?: number } }>(
    "/api/v1/builds",
    {
      schema: {
        summary: "List builds, newest first",
        tags,
        querystring: {
          type: "object",
          properties: {
            package: { type: "string" },
            state: { type: "string" },
            limit: { type: "integer", minimum: 1, maximum: 1000 },
          },
        },
      },
    },
    async (req) => {
      requireAuth(req);
      return listBuilds(deps.db.kysely, req.query);
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/builds/:id",
    {
      schema: {
        summary: "A build by id",
        tags,
        params: { type: "object", properties: { id: { type: "integer" } }, required: ["id"] },
      },
    },
    async (req) => {
      requireAuth(req);
      return buildJson(deps.db.kysely, await getBuildRow(deps.db.kysely, req.params.id));
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/builds/:id/attempts",
    {
      schema: {
        summary: "Every attempt of a build's steps: host, outcome, exit status, duration",
        tags,
        params: { type: "object", properties: { id: { type: "integer" } }, required: ["id"] },
      },
    },
    async (req) => {
      requireAuth(req);
      const build = await getBuildRow(deps.db.kysely, req.params.id);
      return buildAttempts(deps.db.kysely, build.task_id, deps.clock.now());
    },
  );

  app.get<{ Params: { source: string; version: string } }>(
    "/api/v1/builds/:source/:version",
    {
      schema: {
        summary: "A build by SOURCE/VERSION",
        tags,
        params: {
          type: "object",
          properties: { source: { type: "string" }, version: { type: "string" } },
          required: ["source", "version"],
        },
      },
    },
    async (req) => {
      requireAuth(req);
      return buildJson(
        deps.db.kysely,
        await getBuildRow(deps.db.kysely, `${req.params.source}/${req.params.version}`),
      );
    },
  );

  app.get<{ Params: { sha256: string } }>(
    "/api/v1/blobs/:sha256",
    {
      schema: {
        summary: "Download a stored artifact by its SHA-256",
        tags,
        params: { type: "object", properties: { sha256: { type: "string" } }, required: ["sha256"] },
      },
    },
    async (req, reply) => {
      requireAuth(req);
      if (!SHA_RE.test(req.params.sha256))
        throw new KilnError("VALIDATION_FAILED", "not a SHA-256 hex digest");
      if (!(await deps.blobs.has(req.params.sha256)))
        throw new KilnError("ARTIFACT_NOT_FOUND", `no blob ${req.params.sha256}`);
      return reply
        .type("application/octet-stream")
        .header("x-checksum-sha256", req.params.sha256)
        .send(deps.blobs.open(req.params.sha256));
    },
  );

  app.put<{
    Params: { id: number; name: string };
    Querystring: { epoch: number; kind: string; arch?: string };
  }>(
    "/api/v1/tasks/:id/artifacts/:name",
    {
      schema: {
        summary: "A worker attaches an artifact to its attempt (fenced by the epoch)",
        tags: ["worker"],
        params: {
          type: "object",
          properties: { id: { type: "integer" }, name: { type: "string", maxLength: 255 } },
          required: ["id", "name"],
        },
        querystring: {
          type: "object",
          properties: { epoch: { type: "integer" }, kind: { type: "string" }, arch: { type: "string" } },
          required: ["epoch", "kind"],
        },
      },
    },
    async (req, reply) => {
      const p = requireHost(req);
      const { id, name } = req.params;
      const { epoch, kind } = req.query;
      if (!ARTIFACT_KINDS.includes(kind))
        throw new KilnError("VALIDATION_FAILED", `artifact kind must be one of ${ARTIFACT_KINDS.join(", ")}`);
      if (!/^[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}$/.test(name))
        throw new KilnError("INVALID_NAME", `"${name}" is not a valid artifact file name`);
      const fence = async () => {
        const task = await deps.db.kysely
          .selectFrom("tasks")
          .select(["lease_epoch", "host_id", "state"])
          .where("id", "=", id)
          .executeTakeFirst();
        if (!task) throw new KilnError("TASK_NOT_FOUND", `no task ${id}`);
        if (
          task.lease_epoch !== epoch ||
          task.host_id !== p.host.id ||
          !(RUNNING_STATES as readonly string[]).includes(task.state)
        ) {
          throw new KilnError("LEASE_STALE", `task ${id} epoch ${epoch} no longer holds its lease`);
        }
      };
      await fence();
      const stored = await deps.blobs.put(req.body as NodeJS.ReadableStream, {
        maxBytes: deps.config.uploadLimitBytes,
      });
      // Checked again after the (possibly long) upload: a stale attempt's file is never attached.
      await fence();
      const now = deps.clock.now();
      const row = await withWriteTx(deps.db, async (trx) => {
        const existing = await trx
          .selectFrom("artifacts")
          .selectAll()
          .where("task_id", "=", id)
          .where("epoch", "=", epoch)
          .where("name", "=", name)
          .executeTakeFirst();
        if (existing) {
          if (existing.sha256 === stored.sha256) return existing;
          throw new KilnError(
            "VALIDATION_FAILED",
            `artifact ${name} was already uploaded with other content in this attempt`,
          );
        }
        return trx
          .insertInto("artifacts")
          .values({
            task_id: id,
            epoch,
            build_id: null,
            name,
            sha256: stored.sha256,
            size: stored.size,
            kind,
            arch: req.query.arch ?? null,
            created_at: now,
          })
          .returningAll()
          .executeTakeFirstOrThrow();
      });
      return reply.status(201).send(artifactJson(row));
    },
  );
}

/** A build's step attempts, oldest first: the recorded ones and any still running. */
async function buildAttempts(
  db: import("kysely").Kysely<import("../../../db/schema.js").Database>,
  taskId: number | null,
  now: number,
): Promise<BuildAttemptJson[]> {
  if (taskId === null) return [];
  const steps = await db
    .selectFrom("tasks")
    .leftJoin("hosts", "hosts.id", "tasks.host_id")
    .select([
      "tasks.id",
      "tasks.method",
      "tasks.args",
      "tasks.state",
      "tasks.lease_epoch",
      "tasks.claimed_at",
      "hosts.name as host",
    ])
    .where("tasks.parent_id", "=", taskId)
    .where("tasks.method", "in", ["buildSrc", "buildArch"])
    .orderBy("tasks.id")
    .execute();
  if (steps.length === 0) return [];
  const rows = await db
    .selectFrom("task_attempts as a")
    .leftJoin("hosts as h", "h.id", "a.host_id")
    .select([
      "a.task_id",
      "a.epoch",
      "a.outcome",
      "a.error_code",
      "a.exit_code",
      "a.signal",
      "a.started_at",
      "a.ended_at",
      "h.name as host",
    ])
    .where(
      "a.task_id",
      "in",
      steps.map((s) => s.id),
    )
    .orderBy("a.task_id")
    .orderBy("a.epoch")
    .orderBy("a.id")
    .execute();
  const out: BuildAttemptJson[] = [];
  for (const step of steps) {
    const arch =
      step.method === "buildArch" ? ((JSON.parse(step.args) as { arch?: string }).arch ?? null) : null;
    const mine = rows.filter((r) => r.task_id === step.id);
    let n = 0;
    for (const r of mine) {
      out.push({
        taskId: step.id,
        method: step.method,
        arch,
        attempt: ++n,
        host: r.host,
        outcome: r.outcome,
        errorCode: r.error_code,
        exitCode: r.exit_code,
        signal: r.signal,
        startedAt: r.started_at === null ? null : new Date(r.started_at).toISOString(),
        duration: r.started_at === null ? null : (r.ended_at - r.started_at) / 1000,
      });
    }
    const running =
      (step.state === "assigned" || step.state === "open") && !mine.some((r) => r.epoch === step.lease_epoch);
    if (running) {
      out.push({
        taskId: step.id,
        method: step.method,
        arch,
        attempt: ++n,
        host: step.host,
        outcome: "running",
        errorCode: null,
        exitCode: null,
        signal: null,
        startedAt: step.claimed_at === null ? null : new Date(step.claimed_at).toISOString(),
        duration: step.claimed_at === null ? null : (now - step.claimed_at) / 1000,
      });
    }
  }
  return out;
}
