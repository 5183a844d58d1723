import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { matchesPatterns, parseTypeFilter } from "../../../events/event-types.js";
import { readEvents, toEventJson } from "../../../events/outbox.js";
import { requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { openSseStream } from "../../sse-stream.js";

interface EventsQuery {
  since?: number;
  newest?: boolean;
  type?: string;
  limit?: number;
}

const eventsQuery = {
  type: "object",
  properties: {
    since: { type: "integer", minimum: 0 },
    type: { type: "string", maxLength: 1000 },
    limit: { type: "integer", minimum: 1, maximum: 1000 },
    newest: { type: "boolean" },
  },
} as const;

/** `?since=`, else Last-Event-ID (an SSE client reconnecting), else 0. */
function startId(req: FastifyRequest<{ Querystring: EventsQuery }>): number {
  if (req.query.since !== undefined) return req.query.since;
  const last = String(req.headers["last-event-id"] ?? "");
  if (last === "") return 0;
  if (!/^\d+$/.test(last)) throw new KilnError("VALIDATION_FAILED", "Last-Event-ID must be an event id");
  return Number(last);
}

export function registerEventRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["events"];

  app.get<{ Querystring: EventsQuery }>(
    "/api/v1/events",
    {
      schema: {
        summary:
          "Events after `since`, oldest first (`newest=true`: the last `limit`); `type` takes types and NOUN.* patterns, comma-separated; `next` resumes",
        tags,
        querystring: eventsQuery,
      },
    },
    async (req) => {
      requireUser(req);
      const types = req.query.type ? parseTypeFilter(req.query.type) : undefined;
      const since = startId(req);
      const limit = req.query.limit ?? 100;
      const newest = req.query.newest === true;
      const rows = await readEvents(deps.db, { since, limit, newest, ...(types ? { types } : {}) });
      const last = rows[rows.length - 1];
      return { events: rows.map(toEventJson), next: last ? last.id : since };
    },
  );

  app.get<{ Querystring: EventsQuery }>(
    "/api/v1/events/stream",
    {
      schema: {
        summary:
          "Server-sent events: each event as it is recorded, id = event id; resumable with Last-Event-ID or `since`",
        tags,
        querystring: eventsQuery,
      },
    },
    async (req, reply) => {
      requireUser(req);
      const types = req.query.type ? parseTypeFilter(req.query.type) : undefined;
      await streamEvents(deps, req, reply, startId(req), types);
    },
  );
}

/**
 * Follows the outbox: every event after `since` as `event: <type>`, `id: <event id>` and the
 * event's JSON as data. A commit anywhere in the hub wakes the stream; it also looks twice a
 * second, since not every change wakes anyone.
 */
async function streamEvents(
  deps: HubDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  since: number,
  types: string[] | undefined,
): Promise<void> {
  const stream = openSseStream(deps, req, reply);
  const offWake = deps.wake.on(() => stream.wake());
  let cursor = since;
  try {
    while (stream.open) {
      const rows = await readEvents(deps.db, { since: cursor, limit: 500 });
      for (const row of rows) {
        cursor = row.id;
        if (types && !matchesPatterns(row.type, types)) continue;
        stream.send(row.type, toEventJson(row), String(row.id));
      }
      if (rows.length === 500) continue;
      await stream.pause(500);
    }
  } finally {
    offWake();
    stream.end();
  }
}
