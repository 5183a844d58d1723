import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { TaskDetailJson } from "../../../client/types.js";
import { KilnError } from "../../../errors/catalogue.js";
import { cancelTask } from "../../../tasks/cancel-task.js";
import { createTask } from "../../../tasks/create-task.js";
import { explainWaiting } from "../../../tasks/diagnose.js";
import { getMethod } from "../../../tasks/methods.js";
import { retryTask } from "../../../tasks/retry-task.js";
import { logEpochs, readLog } from "../../../tasks/task-logs.js";
import { getTask, listTasks, parseStates } from "../../../tasks/task-queries.js";
import { isFinal, toTaskJson, type TaskRow } from "../../../tasks/types.js";
import type { Principal } from "../../../db/tokens.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { openSseStream } from "../../sse-stream.js";
import { createTaskBody, idParams, taskSchema } from "./schemas.js";

interface CreateBody {
  method: string;
  args?: unknown;
  priority?: unknown;
  arch?: string;
  channel?: string;
  weight?: number;
  timeout?: number;
  locks?: { resource: string; exclusive?: boolean }[];
}

function mayControl(p: Principal, task: TaskRow): void {
  if (p.role === "admin") return;
  if (p.user && p.user.name === task.owner) return;
  throw new KilnError(
    "FORBIDDEN",
    `task ${task.id} belongs to ${task.owner}; only its owner or an admin may do that`,
  );
}

async function taskDetail(deps: HubDeps, row: TaskRow): Promise<TaskDetailJson> {
  const [host, locks, subtasks, why] = await Promise.all([
    row.host_id === null
      ? Promise.resolve(undefined)
      : deps.db.kysely.selectFrom("hosts").select("name").where("id", "=", row.host_id).executeTakeFirst(),
    deps.db.kysely
      .selectFrom("task_locks")
      .select(["resource", "exclusive"])
      .where("task_id", "=", row.id)
      .execute(),
    deps.db.kysely.selectFrom("tasks").select("id").where("parent_id", "=", row.id).orderBy("id").execute(),
    explainWaiting(deps, row),
  ]);
  const declared = row.locks ? (JSON.parse(row.locks) as { resource: string; exclusive: boolean }[]) : [];
  return {
    ...toTaskJson(row),
    why,
    host: host?.name ?? null,
    locks:
      locks.length > 0
        ? locks.map((l) => ({ resource: l.resource, exclusive: l.exclusive === 1 }))
        : declared,
    subtasks: subtasks.map((s) => s.id),
  };
}

export function registerTaskRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["tasks"];

  app.post<{ Body: CreateBody }>(
    "/api/v1/tasks",
    { schema: { summary: "Queue a task", tags, body: createTaskBody, response: { 201: taskSchema } } },
    async (req, reply) => {
      const p = requireUser(req);
      const spec = getMethod(req.body.method);
      if (!spec.userCreatable)
        throw new KilnError("FORBIDDEN", `${spec.name} tasks are created by the hub only`);
      if (spec.adminOnly && p.role !== "admin") {
        throw new KilnError("ADMIN_REQUIRED", `only an admin may create ${spec.name} tasks`);
      }
      if (req.body.locks && req.body.locks.length > 0 && p.role !== "admin") {
        throw new KilnError("ADMIN_REQUIRED", "only an admin may declare resource locks by hand");
      }
      // Behind the worker calls, while they keep the hub busy (see Dispatcher.admit).
      await deps.dispatcher.admit({
        arch: req.body.arch ?? spec.arch,
        channel: req.body.channel ?? spec.channel,
        weight: req.body.weight ?? spec.weight,
      });
      const row = await createTask(deps, {
        method: req.body.method,
        args: req.body.args,
        owner: p.user.name,
        ...(req.body.priority !== undefined ? { priority: req.body.priority as number } : {}),
        ...(req.body.arch !== undefined ? { arch: req.body.arch } : {}),
        ...(req.body.channel !== undefined ? { channel: req.body.channel } : {}),
        ...(req.body.weight !== undefined ? { weight: req.body.weight } : {}),
        ...(req.body.timeout !== undefined ? { timeout: req.body.timeout } : {}),
        locks: (req.body.locks ?? []).map((l) => ({
          resource: l.resource,
          exclusive: l.exclusive !== false,
        })),
      });
      return reply.status(201).send(toTaskJson(row));
    },
  );

  app.get<{
    Querystring: {
      state?: string;
      method?: string;
      owner?: string;
      parent?: number;
      host?: number;
      before?: number;
      limit?: number;
    };
  }>(
    "/api/v1/tasks",
    {
      schema: {
        summary: "List tasks, newest first (keyset pagination with `before`)",
        tags,
        querystring: {
          type: "object",
          properties: {
            state: { type: "string" },
            method: { type: "string" },
            owner: { type: "string" },
            parent: { type: "integer" },
            host: { type: "integer" },
            before: { type: "integer" },
            limit: { type: "integer", minimum: 1, maximum: 1000 },
          },
        },
      },
    },
    async (req) => {
      requireAuth(req);
      const limit = req.query.limit ?? 100;
      const states = parseStates(req.query.state);
      const rows = await listTasks(deps, {
        ...(states ? { state: states } : {}),
        ...(req.query.method ? { method: req.query.method } : {}),
        ...(req.query.owner ? { owner: req.query.owner } : {}),
        ...(req.query.parent !== undefined ? { parentId: req.query.parent } : {}),
        ...(req.query.host !== undefined ? { hostId: req.query.host } : {}),
        ...(req.query.before !== undefined ? { before: req.query.before } : {}),
        limit,
      });
      const last = rows[rows.length - 1];
      return { tasks: rows.map(toTaskJson), next: rows.length === limit && last ? last.id : null };
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/tasks/:id",
    { schema: { summary: "Show a task, with why it waits", tags, params: idParams } },
    async (req) => {
      requireAuth(req);
      return taskDetail(deps, await getTask(deps, req.params.id));
    },
  );

  app.post<{ Params: { id: number } }>(
    "/api/v1/tasks/:id/cancel",
    { schema: { summary: "Cancel a task and its subtasks", tags, params: idParams } },
    async (req) => {
      const p = requireUser(req);
      mayControl(p, await getTask(deps, req.params.id));
      const { task, canceled } = await cancelTask(deps, req.params.id, p.user.name);
      return { task: toTaskJson(task), canceled };
    },
  );

  app.post<{ Params: { id: number } }>(
    "/api/v1/tasks/:id/retry",
    {
      schema: {
        summary: "Run a failed or canceled task again",
        tags,
        params: idParams,
        response: { 200: taskSchema },
      },
    },
    async (req) => {
      const p = requireUser(req);
      mayControl(p, await getTask(deps, req.params.id));
      return toTaskJson(await retryTask(deps, req.params.id));
    },
  );

  app.get<{ Params: { id: number }; Querystring: { epoch?: number; follow?: string } }>(
    "/api/v1/tasks/:id/logs",
    {
      schema: {
        summary:
          "A task's log (latest attempt by default); `follow=1` or Accept: text/event-stream streams it",
        tags,
        params: idParams,
        querystring: {
          type: "object",
          properties: { epoch: { type: "integer", minimum: 1 }, follow: { type: "string" } },
        },
      },
    },
    async (req, reply) => {
      requireAuth(req);
      const task = await getTask(deps, req.params.id);
      const follow =
        (req.query.follow !== undefined && req.query.follow !== "0") ||
        (req.headers.accept ?? "").includes("text/event-stream");
      if (follow) return streamLog(deps, req, reply, task);
      const epochs = await logEpochs(deps, task.id);
      const epoch = req.query.epoch ?? epochs[epochs.length - 1];
      const chunks = epoch === undefined ? [] : await readLog(deps, task.id, epoch);
      return reply
        .type("text/plain; charset=utf-8")
        .header("x-kiln-epoch", String(epoch ?? 0))
        .send(chunks.map((c) => c.data).join(""));
    },
  );
}

/**
 * Server-sent events: `log` events carry `{epoch, offset, data}` with id `epoch:endOffset`, so a
 * client reconnecting with Last-Event-ID resumes exactly; `end` says the task is final and its
 * log drained. A newer attempt's log follows the older one's.
 */
async function streamLog(
  deps: HubDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  task: TaskRow,
): Promise<void> {
  const query = req.query as { epoch?: number };
  const resume = /^(\d+):(\d+)$/.exec(String(req.headers["last-event-id"] ?? ""));
  let epoch = resume ? Number(resume[1]) : (query.epoch ?? (await logEpochs(deps, task.id))[0] ?? 1);
  let offset = resume ? Number(resume[2]) : 0;
  const pinned = query.epoch !== undefined;

  const stream = openSseStream(deps, req, reply);
  const onLog = () => stream.wake();
  deps.logEvents.on(`log:${task.id}`, onLog);
  try {
    while (stream.open) {
      // Read the state first: a log written before the task went final is then surely read below.
      const current = await getTask(deps, task.id);
      const chunks = await readLog(deps, task.id, epoch, offset);
      for (const chunk of chunks) {
        offset = chunk.offset + Buffer.byteLength(chunk.data, "utf8");
        stream.send("log", { ...chunk, epoch }, `${epoch}:${offset}`);
      }
      if (!pinned) {
        const newer = (await logEpochs(deps, task.id)).find((e) => e > epoch);
        if (newer !== undefined) {
          epoch = newer;
          offset = 0;
          continue;
        }
      }
      if (isFinal(current.state) && chunks.length === 0) {
        stream.send("end", { state: current.state, error: toTaskJson(current).error });
        break;
      }
      await stream.pause(500);
    }
  } finally {
    deps.logEvents.off(`log:${task.id}`, onLog);
    stream.end();
  }
}
