import type { FastifyInstance, FastifyRequest } from "fastify";
import type { HelloRequest } from "../../../client/types.js";
import { withWriteTx } from "../../../db/database.js";
import { getHostById, toHostJson, hostLoads, markHostSeen } from "../../../db/hosts.js";
import { KilnError } from "../../../errors/catalogue.js";
import {
  completeTask,
  failTask,
  releaseTask,
  startTask,
  type FinalLogChunk,
  type LeaseRef,
} from "../../../tasks/finish-task.js";
import { heartbeat, resetHostTasks } from "../../../tasks/heartbeat.js";
import { loadHosts, unclaimTask } from "../../../tasks/claim-task.js";
import { createSubtasks, waitForSubtasks, type SubtaskInput } from "../../../tasks/subtasks.js";
import { appendLog } from "../../../tasks/task-logs.js";
import { toTaskJson, type TaskError, type TaskRow } from "../../../tasks/types.js";
import { requireHost } from "../../auth.js";
import { epochBody, idParams, taskSchema } from "./schemas.js";

/** Most tasks one claim hands out. */
const MAX_CLAIM = 64;

const logChunkProperties = {
  offset: { type: "integer", minimum: 0 },
  data: { type: "string", maxLength: 4194304 },
} as const;

/** The last chunk of the log, carried by complete and fail: appended in the same transaction. */
const finalLogSchema = {
  type: "object",
  properties: logChunkProperties,
  required: ["offset", "data"],
} as const;

const hostParams = {
  type: "object",
  properties: { host: { type: "string", minLength: 1, maxLength: 128 } },
  required: ["host"],
} as const;

/** The calls a worker makes: hello, claim, heartbeat, and per task start/log/finish, all fenced. */
export function registerWorkerRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["worker"];
  /** The calling host; counts the call, as worker calls go ahead of submissions (Dispatcher.admit). */
  const workerCall = (req: FastifyRequest, name?: string) => {
    deps.dispatcher.noteWorkerCall();
    return requireHost(req, name);
  };

  app.post<{ Params: { host: string }; Body: HelloRequest }>(
    "/api/v1/hosts/:host/hello",
    {
      schema: {
        summary: "A worker starts: report what it runs; the hub requeues what it lost",
        tags,
        params: hostParams,
        body: {
          type: "object",
          properties: {
            running: {
              type: "array",
              items: {
                type: "object",
                properties: { id: { type: "integer" }, epoch: { type: "integer" } },
                required: ["id", "epoch"],
              },
            },
            capabilities: { type: "array", items: { type: "string" } },
            version: { type: "string" },
            arches: { type: "array", items: { type: "string" } },
          },
          required: ["running", "capabilities", "version"],
        },
      },
    },
    async (req) => {
      const p = workerCall(req, req.params.host);
      const now = deps.clock.now();
      const reported = JSON.stringify({
        capabilities: req.body.capabilities,
        version: req.body.version,
        arches: req.body.arches ?? null,
      });
      await withWriteTx(deps.db, (trx) => markHostSeen(trx, p.host.id, now, { reported }));
      const requeued = await resetHostTasks(
        deps,
        p.host.id,
        req.body.running.map((r) => r.id),
      );
      const host = await getHostById(deps.db.kysely, p.host.id);
      return {
        host: toHostJson(host, (await hostLoads(deps.db)).get(host.id) ?? 0),
        heartbeatInterval: deps.engine.heartbeatInterval,
        requeued,
      };
    },
  );

  app.post<{ Params: { host: string }; Querystring: { wait?: number; max?: number } }>(
    "/api/v1/hosts/:host/claim",
    {
      schema: {
        summary:
          "Claim the next task this host can run, and up to `max` in all; long-polls up to `wait` seconds (204: none)",
        tags,
        params: hostParams,
        querystring: {
          type: "object",
          properties: {
            wait: { type: "number", minimum: 0 },
            max: { type: "integer", minimum: 1, maximum: MAX_CLAIM },
          },
        },
      },
    },
    async (req, reply) => {
      const p = workerCall(req, req.params.host);
      if (deps.lifecycle.closing) throw new KilnError("SHUTTING_DOWN");
      const mark = deps.dispatcher.mark();
      const [host] = await loadHosts(deps, [p.host.id]);
      if (!host) throw new KilnError("HOST_NOT_FOUND", `no host ${p.host.id}`);
      if (host.enabled !== 1) {
        // A disabled host gets nothing; let it wait rather than spin.
        await new Promise((r) => setTimeout(r, Math.min(req.query.wait ?? 0, 5) * 1000));
        return reply.status(204).send();
      }
      if (host.ready !== 1 || host.last_seen_at === null || deps.clock.now() - host.last_seen_at > 1000) {
        await withWriteTx(deps.db, (trx) => markHostSeen(trx, host.id, deps.clock.now()));
      }
      const wait = Math.min(req.query.wait ?? 0, deps.engine.claimWaitMax);
      const max = req.query.max;
      const tasks = await deps.dispatcher.claim(host, wait, {
        mark,
        ...(max !== undefined ? { max } : {}),
        // The response's "close" before it finished means the worker hung up (or died) mid-poll.
        onAbort: (cancel) =>
          reply.raw.on("close", () => {
            if (!reply.raw.writableFinished) cancel();
          }),
      });
      if (tasks.length > 0 && (req.raw.socket.destroyed || reply.raw.destroyed)) {
        for (const task of tasks) await unclaimTask(deps, task);
        return reply;
      }
      const [first, ...more] = tasks;
      if (!first) return reply.status(204).send();
      const claimed = (t: TaskRow) => ({ task: toTaskJson(t), epoch: t.lease_epoch });
      return { ...claimed(first), ...(max !== undefined ? { more: more.map(claimed) } : {}) };
    },
  );

  app.post<{ Params: { host: string }; Body: { tasks: { id: number; epoch: number }[] } }>(
    "/api/v1/hosts/:host/heartbeat",
    {
      schema: {
        summary: "The host is alive; extends the leases of the tasks it lists and says which to kill",
        tags,
        params: hostParams,
        body: {
          type: "object",
          properties: {
            tasks: {
              type: "array",
              maxItems: 10000,
              items: {
                type: "object",
                properties: { id: { type: "integer" }, epoch: { type: "integer" } },
                required: ["id", "epoch"],
              },
            },
          },
          required: ["tasks"],
        },
      },
    },
    async (req) => {
      const p = workerCall(req, req.params.host);
      return { tasks: await heartbeat(deps, p.host.id, req.body.tasks) };
    },
  );

  const ref = (req: { params: { id: number }; body: { epoch: number } }, hostId: number): LeaseRef => ({
    id: req.params.id,
    epoch: req.body.epoch,
    hostId,
  });

  app.post<{ Params: { id: number }; Body: { epoch: number } }>(
    "/api/v1/tasks/:id/start",
    {
      schema: {
        summary: "The worker started the task (assigned → open)",
        tags,
        params: idParams,
        body: epochBody,
        response: { 200: taskSchema },
      },
    },
    async (req) => toTaskJson(await startTask(deps, ref(req, workerCall(req).host.id))),
  );

  app.post<{ Params: { id: number }; Body: { epoch: number; offset: number; data: string } }>(
    "/api/v1/tasks/:id/log",
    {
      schema: {
        summary: "Append a chunk of the task's log at a byte offset",
        tags,
        params: idParams,
        body: {
          type: "object",
          properties: { epoch: { type: "integer" }, ...logChunkProperties },
          required: ["epoch", "offset", "data"],
        },
      },
    },
    async (req) => {
      const out = await appendLog(deps, ref(req, workerCall(req).host.id), req.body);
      deps.logEvents.emit(`log:${req.params.id}`);
      return out;
    },
  );

  app.post<{ Params: { id: number }; Body: { epoch: number; result?: unknown; log?: FinalLogChunk } }>(
    "/api/v1/tasks/:id/complete",
    {
      schema: {
        summary: "The task closed with a result (and the last chunk of its log)",
        tags,
        params: idParams,
        body: {
          type: "object",
          properties: { epoch: { type: "integer" }, result: {}, log: finalLogSchema },
          required: ["epoch"],
        },
        response: { 200: taskSchema },
      },
    },
    async (req) => {
      const row = await completeTask(
        deps,
        ref(req, workerCall(req).host.id),
        req.body.result ?? null,
        req.body.log,
      );
      deps.logEvents.emit(`log:${req.params.id}`);
      return toTaskJson(row);
    },
  );

  app.post<{ Params: { id: number }; Body: { epoch: number; error: TaskError; log?: FinalLogChunk } }>(
    "/api/v1/tasks/:id/fail",
    {
      schema: {
        summary: "The task failed (infra failures are requeued with backoff); may carry its log's last chunk",
        tags,
        params: idParams,
        body: {
          type: "object",
          properties: {
            epoch: { type: "integer" },
            error: {
              type: "object",
              properties: {
                code: { type: "string", maxLength: 100 },
                message: { type: "string", maxLength: 65536 },
                infra: { type: "boolean" },
                exitCode: { type: ["integer", "null"] },
                signal: { type: ["string", "null"] },
                details: { type: "object" },
              },
              required: ["code", "message"],
            },
            log: finalLogSchema,
          },
          required: ["epoch", "error"],
        },
        response: { 200: taskSchema },
      },
    },
    async (req) => {
      const row = await failTask(deps, ref(req, workerCall(req).host.id), req.body.error, req.body.log);
      deps.logEvents.emit(`log:${req.params.id}`);
      return toTaskJson(row);
    },
  );

  app.post<{ Params: { id: number }; Body: { epoch: number } }>(
    "/api/v1/tasks/:id/release",
    {
      schema: {
        summary: "Hand a task back (worker shutdown); no failure counted",
        tags,
        params: idParams,
        body: epochBody,
        response: { 200: taskSchema },
      },
    },
    async (req) => toTaskJson(await releaseTask(deps, ref(req, workerCall(req).host.id))),
  );

  app.post<{ Params: { id: number }; Body: { epoch: number; tasks: SubtaskInput[] } }>(
    "/api/v1/tasks/:id/subtasks",
    {
      schema: {
        summary: "Create subtasks, idempotent by label",
        tags,
        params: idParams,
        body: {
          type: "object",
          properties: {
            epoch: { type: "integer" },
            tasks: {
              type: "array",
              maxItems: 1000,
              items: {
                type: "object",
                properties: {
                  label: { type: "string" },
                  method: { type: "string" },
                  args: {},
                  arch: { type: "string" },
                  channel: { type: "string" },
                  weight: { type: "number" },
                  timeout: { type: "integer" },
                },
                required: ["label", "method"],
              },
            },
          },
          required: ["epoch", "tasks"],
        },
      },
    },
    async (req) => {
      const rows = await createSubtasks(deps, ref(req, workerCall(req).host.id), req.body.tasks);
      return { tasks: rows.map(toTaskJson) };
    },
  );

  app.post<{ Params: { id: number }; Body: { epoch: number } }>(
    "/api/v1/tasks/:id/wait",
    {
      schema: {
        summary: "Wait for the subtasks: done now, or suspend until they are",
        tags,
        params: idParams,
        body: epochBody,
      },
    },
    async (req) => {
      const out = await waitForSubtasks(deps, ref(req, workerCall(req).host.id));
      if (!out.done) deps.wake.notify();
      return { done: out.done, subtasks: out.subtasks.map(toTaskJson) };
    },
  );
}
