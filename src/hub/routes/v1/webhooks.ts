import type { FastifyInstance } from "fastify";
import type { WebhookInput } from "../../../events/event-json.js";
import { DEFAULT_WEBHOOKS } from "../../../events/webhook-config.js";
import {
  createWebhook,
  getWebhook,
  listDeliveries,
  listWebhooks,
  pendingCounts,
  queueTestEvent,
  removeWebhook,
  toWebhookJson,
  updateWebhook,
  type WebhookDeps,
} from "../../../events/webhooks.js";
import { requireAdmin } from "../../auth.js";
import { idParams } from "./schemas.js";

const webhookBody = {
  type: "object",
  properties: {
    url: { type: "string", maxLength: 2000 },
    events: { type: "array", items: { type: "string", maxLength: 100 }, minItems: 1, maxItems: 100 },
    secret: { type: ["string", "null"], maxLength: 1024 },
    format: { type: "string" },
    description: { type: ["string", "null"], maxLength: 500 },
    enabled: { type: "boolean" },
  },
  additionalProperties: false,
} as const;

/** Webhooks are admin business: their URLs and secrets reach outside the farm. */
export function registerWebhookRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["webhooks"];
  const hookDeps: WebhookDeps = {
    db: deps.db,
    clock: deps.clock,
    webhooks: deps.config.webhooks ?? DEFAULT_WEBHOOKS,
  };

  app.get("/api/v1/webhooks", { schema: { summary: "List webhooks", tags } }, async (req) => {
    requireAdmin(req);
    const [rows, pending] = await Promise.all([listWebhooks(deps.db), pendingCounts(deps.db)]);
    return rows.map((r) => toWebhookJson(r, pending.get(r.id) ?? 0));
  });

  app.get<{ Params: { id: number } }>(
    "/api/v1/webhooks/:id",
    { schema: { summary: "Show a webhook", tags, params: idParams } },
    async (req) => {
      requireAdmin(req);
      const row = await getWebhook(deps.db, req.params.id);
      return toWebhookJson(row, (await pendingCounts(deps.db)).get(row.id) ?? 0);
    },
  );

  app.post<{ Body: WebhookInput & { url: string; events: string[] } }>(
    "/api/v1/webhooks",
    {
      schema: {
        summary:
          "Add a webhook: POSTs the events it names (types or NOUN.*) to its URL, signed when it has a secret",
        tags,
        body: { ...webhookBody, required: ["url", "events"] },
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      const row = await createWebhook(hookDeps, req.body, p.user?.name ?? null);
      return reply.status(201).send(toWebhookJson(row));
    },
  );

  app.patch<{ Params: { id: number }; Body: WebhookInput }>(
    "/api/v1/webhooks/:id",
    { schema: { summary: "Edit, enable or disable a webhook", tags, params: idParams, body: webhookBody } },
    async (req) => {
      const p = requireAdmin(req);
      const row = await updateWebhook(hookDeps, req.params.id, req.body, p.user?.name ?? null);
      deps.wake.notify();
      return toWebhookJson(row, (await pendingCounts(deps.db)).get(row.id) ?? 0);
    },
  );

  app.delete<{ Params: { id: number } }>(
    "/api/v1/webhooks/:id",
    { schema: { summary: "Remove a webhook and its delivery history", tags, params: idParams } },
    async (req) => {
      requireAdmin(req);
      return toWebhookJson(await removeWebhook(deps.db, req.params.id));
    },
  );

  app.post<{ Params: { id: number } }>(
    "/api/v1/webhooks/:id/test",
    {
      schema: {
        summary:
          "Send a `webhook.test` event to this webhook alone (after what it has pending); answers its event id",
        tags,
        params: idParams,
      },
    },
    async (req, reply) => {
      const p = requireAdmin(req);
      const eventId = await queueTestEvent(hookDeps, req.params.id, p.user?.name ?? null);
      deps.wake.notify();
      return reply.status(202).send({ eventId });
    },
  );

  app.get<{ Params: { id: number }; Querystring: { limit?: number; event?: number } }>(
    "/api/v1/webhooks/:id/deliveries",
    {
      schema: {
        summary: "A webhook's deliveries, newest first, each with its attempts (status, duration, answer)",
        tags,
        params: idParams,
        querystring: {
          type: "object",
          properties: {
            limit: { type: "integer", minimum: 1, maximum: 500 },
            event: { type: "integer", minimum: 1 },
          },
        },
      },
    },
    async (req) => {
      requireAdmin(req);
      return listDeliveries(deps.db, req.params.id, {
        ...(req.query.limit !== undefined ? { limit: req.query.limit } : {}),
        ...(req.query.event !== undefined ? { eventId: req.query.event } : {}),
      });
    },
  );
}
