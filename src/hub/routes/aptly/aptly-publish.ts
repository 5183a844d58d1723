import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { poolLock, publishLock, repoLock, snapshotLock } from "../../../publish/methods.js";
import {
  listPublications,
  validatePublicationSpec,
  type PublicationSource,
  type PublicationSpec,
} from "../../../publish/publication-store.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { toAptlyPublished } from "./aptly-json.js";
import {
  bodyObject,
  findAptlyPublication,
  findAptlyRepo,
  findAptlySnapshot,
  stringField,
  stringListField,
} from "./aptly-lookups.js";
import { decodeAptlyPrefix } from "./aptly-prefix.js";
import { runAptlyTask } from "./run-aptly-task.js";

interface RawSource {
  Component?: unknown;
  Name?: unknown;
}

function sourceList(body: Record<string, unknown>, key: string): { component: string; name: string }[] {
  const v = body[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v))
    throw new KilnError("BAD_REQUEST", `field ${key} must be a list of {Component, Name}`);
  return (v as RawSource[]).map((s) => {
    if (typeof s !== "object" || s === null || typeof s.Name !== "string" || s.Name === "") {
      throw new KilnError("BAD_REQUEST", `every entry of ${key} needs a Name`);
    }
    if (s.Component !== undefined && s.Component !== null && typeof s.Component !== "string") {
      throw new KilnError("BAD_REQUEST", `Component in ${key} must be a string`);
    }
    return { component: typeof s.Component === "string" ? s.Component : "", name: s.Name };
  });
}

export function registerAptlyPublishRoutes(api: FastifyInstance, deps: HubDeps): void {
  const db = deps.db.kysely;

  api.get("/api/publish", async (req) => {
    requireAuth(req);
    return (await listPublications(db)).map(toAptlyPublished);
  });

  const create = async (req: FastifyRequest<{ Params: { prefix?: string } }>, reply: FastifyReply) => {
    requireUser(req);
    const prefix = decodeAptlyPrefix(req.params.prefix ?? "");
    const body = bodyObject(req.body);
    const kind = stringField(body, "SourceKind", true);
    if (kind !== "local" && kind !== "snapshot") throw new KilnError("BAD_REQUEST", "unknown SourceKind");
    const given = sourceList(body, "Sources");
    if (given.length === 0) throw new KilnError("BAD_REQUEST", "unable to publish: sources are empty");
    // Aptly fills in what is left out from the first source: a repo's default distribution and
    // each repo's default component; "main" otherwise.
    let distribution = stringField(body, "Distribution") ?? "";
    const sources: PublicationSource[] = [];
    for (const s of given) {
      if (kind === "local") {
        const repo = await findAptlyRepo(db, s.name).catch((err: unknown) => {
          throw err instanceof KilnError ? new KilnError(err.code, `unable to publish: ${err.message}`) : err;
        });
        if (distribution === "") distribution = repo.distribution;
        sources.push({ component: s.component || repo.component || "main", name: s.name });
      } else {
        await findAptlySnapshot(db, s.name).catch((err: unknown) => {
          throw err instanceof KilnError ? new KilnError(err.code, `unable to publish: ${err.message}`) : err;
        });
        sources.push({ component: s.component || "main", name: s.name });
      }
    }
    if (distribution === "") {
      throw new KilnError("BAD_REQUEST", "unable to guess distribution name, please specify explicitly");
    }
    const signing = body.Signing as { Skip?: unknown } | undefined;
    const spec: PublicationSpec = {
      prefix,
      distribution,
      sourceKind: kind,
      sources,
      architectures: stringListField(body, "Architectures"),
      ...(stringField(body, "Origin") ? { origin: stringField(body, "Origin") } : {}),
      ...(stringField(body, "Label") ? { label: stringField(body, "Label") } : {}),
      skipSigning: typeof signing === "object" && signing !== null && signing.Skip === true,
    };
    validatePublicationSpec(spec);
    const existing = await db
      .selectFrom("publications")
      .select("id")
      .where("prefix", "=", prefix)
      .where("distribution", "=", distribution)
      .executeTakeFirst();
    if (existing) {
      throw new KilnError(
        "PUBLICATION_EXISTS",
        `prefix/distribution already used by another published repo: ${prefix}/${distribution}`,
        { prefix, distribution },
      );
    }
    const lock = kind === "local" ? repoLock : snapshotLock;
    return runAptlyTask(deps, req, reply, {
      method: "publishCreate",
      args: { spec },
      locks: [
        publishLock(prefix, distribution),
        poolLock(prefix),
        ...sources.map((s) => lock(s.name, false)),
      ],
    });
  };
  api.post("/api/publish", create);
  api.post<{ Params: { prefix: string } }>("/api/publish/:prefix", create);

  api.get<{ Params: { prefix: string; distribution: string } }>(
    "/api/publish/:prefix/:distribution",
    async (req) => {
      requireAuth(req);
      const prefix = decodeAptlyPrefix(req.params.prefix);
      return toAptlyPublished(await findAptlyPublication(db, prefix, req.params.distribution));
    },
  );

  api.put<{ Params: { prefix: string; distribution: string } }>(
    "/api/publish/:prefix/:distribution",
    async (req, reply) => {
      requireUser(req);
      const prefix = decodeAptlyPrefix(req.params.prefix);
      const dist = req.params.distribution;
      const row = await findAptlyPublication(db, prefix, dist);
      const body = bodyObject(req.body);
      const snapshots = sourceList(body, "Snapshots");
      const current = JSON.parse(row.sources) as PublicationSource[];
      if (row.source_kind === "local") {
        if (snapshots.length > 0) {
          throw new KilnError("BAD_REQUEST", "snapshots shouldn't be given when updating local repo");
        }
        return runAptlyTask(deps, req, reply, {
          method: "publishUpdate",
          args: { prefix, distribution: dist },
          locks: [
            publishLock(prefix, dist),
            poolLock(prefix),
            ...current.map((s) => repoLock(s.name, false)),
          ],
        });
      }
      if (row.source_kind !== "snapshot") {
        throw new KilnError(
          "BAD_REQUEST",
          `a publication of kind "${row.source_kind}" is not updated through /api`,
        );
      }
      if (snapshots.length === 0) {
        return runAptlyTask(deps, req, reply, {
          method: "publishUpdate",
          args: { prefix, distribution: dist },
          locks: [
            publishLock(prefix, dist),
            poolLock(prefix),
            ...current.map((s) => snapshotLock(s.name, false)),
          ],
        });
      }
      // Aptly switches only the components named; the others keep their snapshots.
      const next = current.map((s) => ({ ...s }));
      for (const s of snapshots) {
        const component = s.component || "main";
        const at = next.find((c) => c.component === component);
        if (!at) throw new KilnError("NOT_FOUND", `component ${component} is not in published repository`);
        await findAptlySnapshot(db, s.name);
        at.name = s.name;
      }
      return runAptlyTask(deps, req, reply, {
        method: "publishSwitch",
        args: { prefix, distribution: dist, sources: next },
        locks: [publishLock(prefix, dist), poolLock(prefix), ...next.map((s) => snapshotLock(s.name, false))],
      });
    },
  );

  api.delete<{ Params: { prefix: string; distribution: string } }>(
    "/api/publish/:prefix/:distribution",
    async (req, reply) => {
      requireUser(req);
      const prefix = decodeAptlyPrefix(req.params.prefix);
      const dist = req.params.distribution;
      await findAptlyPublication(db, prefix, dist);
      return runAptlyTask(deps, req, reply, {
        method: "publishDrop",
        args: { prefix, distribution: dist },
        locks: [publishLock(prefix, dist), poolLock(prefix)],
      });
    },
  );
}
