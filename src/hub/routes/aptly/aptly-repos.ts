import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { withWriteTx } from "../../../db/database.js";
import { KilnError } from "../../../errors/catalogue.js";
import { repoLock, snapshotLock } from "../../../publish/methods.js";
import type { PackageRecord } from "../../../publish/package-store.js";
import { filterPackages } from "../../../publish/repo-ops.js";
import {
  addToRepo,
  createRepo,
  editRepo,
  listRepos,
  publicationsServing,
  repoPackages,
} from "../../../publish/repo-store.js";
import { snapshotPackages } from "../../../publish/snapshot-store.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { toAptlyPackageDetails, toAptlyRepo } from "./aptly-json.js";
import {
  assertNewSnapshotName,
  assertPackageKeys,
  bodyObject,
  findAptlyRepo,
  stringField,
  stringListField,
} from "./aptly-lookups.js";
import { isAsync, isSet, runAptlyTask } from "./run-aptly-task.js";

/** Aptly's package listing: keys, or `format=details` objects, filtered by `q`. */
export function aptlyPackageList(packages: PackageRecord[], query: unknown): unknown[] {
  const q = (query ?? {}) as { q?: unknown; format?: unknown };
  const list = typeof q.q === "string" && q.q.trim() !== "" ? filterPackages(packages, q.q) : packages;
  return q.format === "details" ? list.map(toAptlyPackageDetails) : list.map((p) => p.key);
}

export function registerAptlyRepoRoutes(api: FastifyInstance, deps: HubDeps): void {
  const db = deps.db.kysely;

  api.get("/api/repos", async (req) => {
    requireAuth(req);
    return (await listRepos(db)).map(toAptlyRepo);
  });

  api.post("/api/repos", async (req, reply) => {
    requireUser(req);
    const body = bodyObject(req.body);
    const name = stringField(body, "Name", true) ?? "";
    const fromSnapshot = stringField(body, "FromSnapshot");
    const input = {
      name,
      comment: stringField(body, "Comment") ?? "",
      distribution: stringField(body, "DefaultDistribution") ?? "",
      component: stringField(body, "DefaultComponent") ?? "",
    };
    let packages: PackageRecord[] = [];
    if (fromSnapshot) {
      const snap = await db
        .selectFrom("snapshots")
        .selectAll()
        .where("name", "=", fromSnapshot)
        .executeTakeFirst();
      if (!snap) {
        throw new KilnError(
          "SNAPSHOT_NOT_FOUND",
          `source snapshot not found: snapshot with name ${fromSnapshot} not found`,
          { name: fromSnapshot },
        );
      }
      packages = await snapshotPackages(db, snap.id);
    }
    const row = await withWriteTx(deps.db, async (trx) => {
      const exists = await trx.selectFrom("repos").select("id").where("name", "=", name).executeTakeFirst();
      if (exists) throw new KilnError("REPO_EXISTS", `local repo with name ${name} already exists`, { name });
      const repo = await createRepo(trx, input, deps.clock.now());
      // A snapshot holds one package per name, version and arch, so nothing here conflicts.
      if (packages.length > 0) await addToRepo(trx, repo.id, packages);
      return repo;
    });
    return reply.status(201).send(toAptlyRepo(row));
  });

  api.get<{ Params: { name: string } }>("/api/repos/:name", async (req) => {
    requireAuth(req);
    return toAptlyRepo(await findAptlyRepo(db, req.params.name));
  });

  api.put<{ Params: { name: string } }>("/api/repos/:name", async (req) => {
    requireUser(req);
    const repo = await findAptlyRepo(db, req.params.name);
    const body = bodyObject(req.body);
    const rename = stringField(body, "Name");
    if (rename !== undefined && rename !== "" && rename !== repo.name) {
      // Repo names are lock names and appear in publications' sources: Kiln keeps them fixed.
      throw new KilnError(
        "VALIDATION_FAILED",
        "renaming a local repo is not supported by Kiln; create a new one",
      );
    }
    const patch: { comment?: string; distribution?: string; component?: string } = {};
    const comment = stringField(body, "Comment");
    const distribution = stringField(body, "DefaultDistribution");
    const component = stringField(body, "DefaultComponent");
    if (comment !== undefined) patch.comment = comment;
    if (distribution !== undefined) patch.distribution = distribution;
    if (component !== undefined && component !== "") patch.component = component;
    return toAptlyRepo(await editRepo(db, repo.name, patch));
  });

  api.delete<{ Params: { name: string } }>("/api/repos/:name", async (req, reply) => {
    requireUser(req);
    const repo = await findAptlyRepo(db, req.params.name);
    // Aptly refuses to drop a published repo even with force=1 (force only overrides its check
    // for snapshots, which in Kiln never depend on the repo they came from).
    if ((await publicationsServing(db, "local", repo.name)).length > 0) {
      throw new KilnError("REPO_PUBLISHED", "unable to drop, local repo is published", { name: repo.name });
    }
    return runAptlyTask(deps, req, reply, {
      method: "repoDrop",
      args: { repo: repo.name, force: false },
      locks: [repoLock(repo.name)],
    });
  });

  api.get<{ Params: { name: string } }>("/api/repos/:name/packages", async (req) => {
    requireAuth(req);
    const repo = await findAptlyRepo(db, req.params.name);
    return aptlyPackageList(await repoPackages(db, repo.id), req.query);
  });

  const keysCall =
    (method: "repoAddKeys" | "repoRemoveKeys") =>
    async (req: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
      requireUser(req);
      const repo = await findAptlyRepo(db, req.params.name);
      const keys = stringListField(bodyObject(req.body), "PackageRefs");
      await assertPackageKeys(db, keys);
      return runAptlyTask(deps, req, reply, {
        method,
        args: { repo: repo.name, keys },
        locks: [repoLock(repo.name)],
      });
    };
  api.post<{ Params: { name: string } }>("/api/repos/:name/packages", keysCall("repoAddKeys"));
  api.delete<{ Params: { name: string } }>("/api/repos/:name/packages", keysCall("repoRemoveKeys"));

  const fromUpload = async (
    req: FastifyRequest<{ Params: { name: string; dir: string; file?: string } }>,
    reply: FastifyReply,
  ) => {
    requireUser(req);
    const { dir, file } = req.params;
    deps.uploads.areaDir(dir); // Aptly's "wrong dir": 400 for a name that is no upload area
    if (file !== undefined) deps.uploads.filePath(dir, file);
    const repo = await findAptlyRepo(db, req.params.name);
    if (!(await deps.uploads.exists(dir)) && !isAsync(req.query)) {
      // What Aptly reports for a directory that is not there: a failed file, not an error.
      return reply.status(200).send({
        FailedFiles: [dir],
        Report: { Warnings: [`Unable to process ${dir}: no such upload directory`], Added: [], Removed: [] },
      });
    }
    return runAptlyTask(deps, req, reply, {
      method: "repoAdd",
      args: {
        repo: repo.name,
        upload: dir,
        ...(file !== undefined ? { files: [file] } : {}),
        forceReplace: isSet(req.query, "forceReplace"),
        removeUpload: isSet(req.query, "noRemove") ? "none" : "added",
      },
      locks: [repoLock(repo.name)],
    });
  };
  api.post<{ Params: { name: string; dir: string } }>("/api/repos/:name/file/:dir", fromUpload);
  api.post<{ Params: { name: string; dir: string; file: string } }>(
    "/api/repos/:name/file/:dir/:file",
    fromUpload,
  );

  api.post<{ Params: { name: string } }>("/api/repos/:name/snapshots", async (req, reply) => {
    requireUser(req);
    const repo = await findAptlyRepo(db, req.params.name);
    const body = bodyObject(req.body);
    const name = stringField(body, "Name", true) ?? "";
    await assertNewSnapshotName(db, name);
    const description = stringField(body, "Description") || `Snapshot from local repo [${repo.name}]`;
    return runAptlyTask(deps, req, reply, {
      method: "snapshotCreate",
      args: { name, description, from: { kind: "repo", repo: repo.name } },
      locks: [snapshotLock(name), repoLock(repo.name, false)],
    });
  });
}
