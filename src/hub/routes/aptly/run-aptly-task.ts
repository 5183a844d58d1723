import type { FastifyReply, FastifyRequest } from "fastify";
import type { PublicationSpec } from "../../../publish/publication-store.js";
import { findPublication } from "../../../publish/publication-store.js";
import type { RepoAddResult } from "../../../publish/repo-ops.js";
import type { TaskRow } from "../../../tasks/types.js";
import { requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { awaitTask, queueRepoTask, type RepoTaskInput } from "../../repo-tasks.js";
import {
  toAptlyAddReport,
  toAptlyPublished,
  toAptlyRepo,
  toAptlySnapshot,
  toAptlyTask,
} from "./aptly-json.js";

/** Aptly's `_async` (and Kiln's `async`): y, yes, t, true or 1, in any case. */
export function isAsync(query: unknown): boolean {
  const q = (query ?? {}) as Record<string, unknown>;
  return [q._async, q.async].some((v) => typeof v === "string" && /^(y|yes|t|true|1)$/i.test(v));
}

/** Aptly's `force=1` style flags. */
export function isSet(query: unknown, key: string): boolean {
  const v = ((query ?? {}) as Record<string, unknown>)[key];
  return typeof v === "string" && /^(1|y|yes|t|true)$/i.test(v);
}

export interface AptlyAnswer {
  status: number;
  body: unknown;
}

/**
 * What Aptly answers when the work of a task is done — the body of a synchronous call, and the
 * task's `return_value`. Rows are read again, so the answer shows the state the task left.
 */
export async function aptlyAnswer(deps: HubDeps, task: TaskRow, result: unknown): Promise<AptlyAnswer> {
  const db = deps.db.kysely;
  const args = JSON.parse(task.args) as Record<string, unknown>;
  const str = (k: string) => {
    const v = args[k];
    return typeof v === "string" ? v : "";
  };
  switch (task.method) {
    case "repoAdd":
      return { status: 200, body: toAptlyAddReport(str("upload"), result as RepoAddResult) };
    case "repoAddKeys":
    case "repoRemoveKeys": {
      const repo = await db
        .selectFrom("repos")
        .selectAll()
        .where("name", "=", str("repo"))
        .executeTakeFirst();
      return { status: 200, body: repo ? toAptlyRepo(repo) : result };
    }
    case "snapshotCreate": {
      const snap = await db
        .selectFrom("snapshots")
        .selectAll()
        .where("name", "=", str("name"))
        .executeTakeFirst();
      return { status: 201, body: snap ? toAptlySnapshot(snap) : result };
    }
    case "publishCreate":
    case "publishUpdate":
    case "publishSwitch": {
      const spec = args.spec as PublicationSpec | undefined;
      const prefix = spec?.prefix ?? str("prefix");
      const dist = spec?.distribution ?? str("distribution");
      const row = await findPublication(db, prefix, dist);
      return {
        status: task.method === "publishCreate" ? 201 : 200,
        body: row ? toAptlyPublished(row) : result,
      };
    }
    case "repoDrop":
    case "snapshotDrop":
    case "publishDrop":
      return { status: 200, body: {} };
    default:
      return { status: 200, body: result ?? {} };
  }
}

/**
 * Queues a repository task for an Aptly call: with `_async=true` the answer is 202 and the task
 * (Aptly's `{ID, Name, State}`); otherwise the call waits and answers as Aptly does, the task's
 * error becoming Aptly's `{"error": ...}` through the plugin's error handler.
 */
export async function runAptlyTask(
  deps: HubDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  input: Omit<RepoTaskInput, "owner">,
): Promise<FastifyReply> {
  const p = requireUser(req);
  const task = await queueRepoTask(deps, { ...input, owner: p.user.name });
  if (isAsync(req.query)) return reply.status(202).send(toAptlyTask(task));
  const result = await awaitTask(deps, task.id);
  const answer = await aptlyAnswer(deps, task, result);
  return reply.status(answer.status).send(answer.body);
}
