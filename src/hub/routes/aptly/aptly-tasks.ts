import type { FastifyInstance, FastifyRequest } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { REPO_METHODS } from "../../../publish/methods.js";
import { logEpochs, readLog } from "../../../tasks/task-logs.js";
import { ACTIVE_STATES, isFinal, type TaskError, type TaskRow } from "../../../tasks/types.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { awaitTask } from "../../repo-tasks.js";
import { toAptlyTask } from "./aptly-json.js";
import { aptlyAnswer } from "./run-aptly-task.js";

const LIST_LIMIT = 1000;

/**
 * Aptly's task API over Kiln's tasks — the repository methods only (builds are Kiln's own and
 * live under /api/v1/tasks). Kiln keeps its task history, so deleting or clearing tasks here
 * hides nothing; see docs/aptly-api.md.
 */
export function registerAptlyTaskRoutes(api: FastifyInstance, deps: HubDeps): void {
  const db = deps.db.kysely;
  const methods = [...REPO_METHODS] as string[];

  const findTask = async (
    req: FastifyRequest<{ Params: { id: string } }>,
    status404 = true,
  ): Promise<TaskRow> => {
    const id = /^\d{1,15}$/.test(req.params.id) ? Number(req.params.id) : NaN;
    const row = Number.isFinite(id)
      ? await db
          .selectFrom("tasks")
          .selectAll()
          .where("id", "=", id)
          .where("method", "in", methods)
          .executeTakeFirst()
      : undefined;
    if (!row) {
      throw new KilnError(
        status404 ? "TASK_NOT_FOUND" : "BAD_REQUEST",
        `could not find task with id ${req.params.id}`,
      );
    }
    return row;
  };

  /** Resolves when the task is final; a failed task is an answer here, not an error. */
  const waitFor = async (req: FastifyRequest, row: TaskRow): Promise<TaskRow> => {
    const ctl = new AbortController();
    const onClose = () => ctl.abort();
    req.raw.on("close", onClose);
    try {
      await awaitTask(deps, row.id, ctl.signal);
    } catch (err) {
      if (err instanceof KilnError && err.code === "SHUTTING_DOWN") throw err;
    } finally {
      req.raw.off("close", onClose);
    }
    return db.selectFrom("tasks").selectAll().where("id", "=", row.id).executeTakeFirstOrThrow();
  };

  api.get("/api/tasks", async (req) => {
    requireAuth(req);
    const rows = await db
      .selectFrom("tasks")
      .selectAll()
      .where("method", "in", methods)
      .orderBy("id", "desc")
      .limit(LIST_LIMIT)
      .execute();
    return rows.reverse().map(toAptlyTask);
  });

  api.get<{ Params: { id: string } }>("/api/tasks/:id", async (req) => {
    requireAuth(req);
    return toAptlyTask(await findTask(req));
  });

  api.get<{ Params: { id: string } }>("/api/tasks/:id/wait", async (req) => {
    requireAuth(req);
    return toAptlyTask(await waitFor(req, await findTask(req, false)));
  });

  api.get<{ Params: { id: string } }>("/api/tasks/:id/output", async (req, reply) => {
    requireAuth(req);
    const row = await findTask(req);
    const epochs = await logEpochs(deps, row.id);
    const last = epochs[epochs.length - 1];
    let text = last === undefined ? "" : (await readLog(deps, row.id, last)).map((c) => c.data).join("");
    if (row.error) {
      const err = JSON.parse(row.error) as TaskError;
      text += `${text && !text.endsWith("\n") ? "\n" : ""}${err.code}: ${err.message}\n`;
    }
    return reply.type("application/json").send(JSON.stringify(text));
  });

  api.get<{ Params: { id: string } }>("/api/tasks/:id/detail", async (req) => {
    requireAuth(req);
    const row = await findTask(req);
    return row.result === null ? {} : (JSON.parse(row.result) as unknown);
  });

  api.get<{ Params: { id: string } }>("/api/tasks/:id/return_value", async (req, reply) => {
    requireAuth(req);
    const row = await findTask(req);
    if (row.state !== "closed") return reply.type("application/json").send("null");
    const answer = await aptlyAnswer(
      deps,
      row,
      row.result === null ? null : (JSON.parse(row.result) as unknown),
    );
    return answer.body;
  });

  api.delete<{ Params: { id: string } }>("/api/tasks/:id", async (req) => {
    requireUser(req);
    const row = await findTask(req, false);
    if (!isFinal(row.state)) throw new KilnError("BAD_REQUEST", `task with id ${row.id} is still running`);
    return toAptlyTask(row);
  });

  api.post("/api/tasks-clear", (req) => {
    requireUser(req);
    return {};
  });

  api.get("/api/tasks-wait", async (req) => {
    requireAuth(req);
    for (;;) {
      const row = await db
        .selectFrom("tasks")
        .selectAll()
        .where("method", "in", methods)
        .where("state", "in", [...ACTIVE_STATES])
        .orderBy("id")
        .executeTakeFirst();
      if (!row) return {};
      await waitFor(req, row);
      if (req.raw.destroyed) return {};
    }
  });
}
