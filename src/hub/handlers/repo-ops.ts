import path from "node:path";
import { KilnError } from "../../errors/catalogue.js";
import type { RepoMethod } from "../../publish/methods.js";
import type { PublicationSource, PublicationSpec } from "../../publish/publication-store.js";
import {
  createPublication,
  dropPublication,
  rollbackPublication,
  switchPublication,
  updatePublication,
  type PublishDeps,
} from "../../publish/publish-ops.js";
import {
  addFilesToRepo,
  addKeysToRepo,
  copyBetweenRepos,
  createSnapshot,
  dropRepoOp,
  dropSnapshotOp,
  importTagIntoRepo,
  removeFromRepoByKeys,
  removeFromRepoByQuery,
  type SnapshotSource,
} from "../../publish/repo-ops.js";
import { collectGarbage, lockedPoolPrefixes } from "../../publish/collect-garbage.js";
import { TaskFailure, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

/** What the publishing code needs, taken from the hub's deps. */
export function publishDeps(deps: HubDeps): PublishDeps {
  return {
    db: deps.db,
    clock: deps.clock,
    blobs: deps.blobs,
    dirs: {
      publicDir: path.join(deps.config.data, "public"),
      stagingDir: path.join(deps.config.data, "staging"),
    },
    signer: async () => {
      await deps.archiveKey.ensure();
      return deps.archiveKey;
    },
    log: deps.log,
    observePublish: deps.metrics?.observePublish,
  };
}

type Args = Record<string, unknown>;
type Op = (p: PublishDeps, args: Args, hub: HubDeps, owner: string, taskId: number) => Promise<unknown>;

const str = (args: Args, key: string): string => {
  const v = args[key];
  if (typeof v !== "string") throw new KilnError("VALIDATION_FAILED", `${key} must be a string`);
  return v;
};

const OPS: Record<RepoMethod, Op> = {
  async repoAdd(p, a, hub, owner) {
    const upload = str(a, "upload");
    const result = await addFilesToRepo(p, {
      repo: str(a, "repo"),
      dir: hub.uploads.areaDir(upload),
      files: Array.isArray(a.files) ? (a.files as string[]) : undefined,
      forceReplace: a.forceReplace === true,
      actor: owner,
    });
    // Files that went in leave the upload area (Aptly's default); failed ones stay for a look.
    if (a.removeUpload === "all") await hub.uploads.remove(upload);
    else if (a.removeUpload !== "none") {
      for (const f of result.files) {
        if (f.outcome !== "failed" && !f.file.includes("/")) await hub.uploads.removeFile(upload, f.file);
      }
    }
    return result;
  },
  repoRemove: (p, a, _h, owner) =>
    removeFromRepoByQuery(p, { repo: str(a, "repo"), query: str(a, "query"), actor: owner }),
  repoAddKeys: (p, a, _h, owner) =>
    addKeysToRepo(p, {
      repo: str(a, "repo"),
      keys: a.keys as string[],
      forceReplace: a.forceReplace === true,
      actor: owner,
    }),
  repoRemoveKeys: (p, a, _h, owner) =>
    removeFromRepoByKeys(p, { repo: str(a, "repo"), keys: a.keys as string[], actor: owner }),
  repoCopy: (p, a, _h, owner) =>
    copyBetweenRepos(p, {
      from: str(a, "from"),
      to: str(a, "to"),
      query: str(a, "query"),
      move: a.move === true,
      forceReplace: a.forceReplace === true,
      actor: owner,
    }),
  repoImportTag: (p, a, _h, owner) =>
    importTagIntoRepo(p, {
      repo: str(a, "repo"),
      tag: str(a, "tag"),
      event: typeof a.event === "number" ? a.event : undefined,
      forceReplace: a.forceReplace === true,
      actor: owner,
    }),
  repoDrop: (p, a, _h, owner) =>
    dropRepoOp(p, { repo: str(a, "repo"), force: a.force === true, actor: owner }),
  snapshotCreate: (p, a, _h, owner) =>
    createSnapshot(p, {
      name: str(a, "name"),
      description: typeof a.description === "string" ? a.description : undefined,
      from: a.from as SnapshotSource,
      actor: owner,
    }),
  snapshotDrop: (p, a, _h, owner) =>
    dropSnapshotOp(p, { name: str(a, "name"), force: a.force === true, actor: owner }),
  publishCreate: (p, a, _h, owner, taskId) =>
    createPublication(p, a.spec as PublicationSpec, { taskId, actor: owner }),
  publishUpdate: (p, a, _h, owner, taskId) =>
    updatePublication(p, str(a, "prefix"), str(a, "distribution"), {
      taskId,
      actor: owner,
      skipIfUnchanged: a.skipIfUnchanged === true,
    }),
  publishSwitch: (p, a, _h, owner, taskId) =>
    switchPublication(p, str(a, "prefix"), str(a, "distribution"), a.sources as PublicationSource[], {
      taskId,
      actor: owner,
    }),
  publishRollback: (p, a, _h, owner) =>
    rollbackPublication(p, str(a, "prefix"), str(a, "distribution"), {
      to: typeof a.to === "number" ? a.to : undefined,
      actor: owner,
    }),
  async publishDrop(p, a, _h, owner) {
    await dropPublication(p, str(a, "prefix"), str(a, "distribution"), owner);
    return { prefix: a.prefix, distribution: a.distribution, dropped: true };
  },
};

/** The hub-side handlers of the repository methods (see publish/methods.ts). */
export function repoHandlers(deps: HubDeps): [string, TaskHandler][] {
  const p = publishDeps(deps);
  const ops: [string, Op][] = [...Object.entries(OPS), ["gc", gcOp]];
  return ops.map(([method, op]) => [
    method,
    async (ctx) => {
      try {
        const result = await op(p, ctx.task.args as Args, deps, ctx.task.owner, ctx.task.id);
        return { result };
      } catch (err) {
        if (err instanceof KilnError) throw new TaskFailure(err.code, err.message);
        throw err;
      }
    },
  ]);
}

/** `gc`: sweeps the pools of exactly the prefixes whose lock the task holds exclusive. */
const gcOp: Op = async (p, a, hub, _owner, taskId) =>
  collectGarbage(
    { ...p, uploads: hub.uploads },
    {
      prefixes: await lockedPoolPrefixes(hub.db.kysely, taskId),
      dryRun: a.dryRun === true,
      taskId,
      ...(typeof a.minAgeSeconds === "number" ? { minAgeMs: a.minAgeSeconds * 1000 } : {}),
    },
  );
