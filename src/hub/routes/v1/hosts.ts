import type { FastifyInstance } from "fastify";
import { withWriteTx } from "../../../db/database.js";
import {
  getHostByName,
  hostLoads,
  insertHost,
  toHostJson,
  updateHost,
  type HostInput,
} from "../../../db/hosts.js";
import { createHostToken } from "../../../db/tokens.js";
import { requireAdmin, requireAuth } from "../../auth.js";
import { hostSchema, nameParams } from "./schemas.js";
import type { HostRow } from "../../../tasks/claim-task.js";

/** The host as the API shows it, with why it is disabled (a quarantine's reason). */
function hostJson(row: HostRow, load: number): ReturnType<typeof toHostJson> {
  return { ...toHostJson(row, load), disabledReason: row.disabled_reason };
}

const hostBody = {
  type: "object",
  properties: {
    name: { type: "string" },
    arches: { type: "array", items: { type: "string" }, maxItems: 64 },
    channels: { type: "array", items: { type: "string" }, maxItems: 64 },
    capacity: { type: "number" },
    description: { type: ["string", "null"], maxLength: 500 },
    enabled: { type: "boolean" },
  },
} as const;

export function registerHostRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["hosts"];

  app.get("/api/v1/hosts", { schema: { summary: "List hosts with their load", tags } }, async (req) => {
    requireAuth(req);
    const [rows, loads] = await Promise.all([
      deps.db.kysely.selectFrom("hosts").selectAll().orderBy("name").execute(),
      hostLoads(deps.db),
    ]);
    return rows.map((r) => hostJson(r, loads.get(r.id) ?? 0));
  });

  app.get<{ Params: { name: string } }>(
    "/api/v1/hosts/:name",
    { schema: { summary: "Show a host", tags, params: nameParams, response: { 200: hostSchema } } },
    async (req) => {
      const p = requireAuth(req);
      const name = req.params.name === "me" && p.host ? p.host.name : req.params.name;
      const row = await getHostByName(deps.db.kysely, name);
      return hostJson(row, (await hostLoads(deps.db)).get(row.id) ?? 0);
    },
  );

  app.post<{ Body: HostInput & { name: string; arches: string[] } }>(
    "/api/v1/hosts",
    {
      schema: {
        summary: "Add a host; answers with its token, shown only this once",
        tags,
        body: { ...hostBody, required: ["name", "arches"] },
      },
    },
    async (req, reply) => {
      requireAdmin(req);
      const now = deps.clock.now();
      const { host, token } = await withWriteTx(deps.db, async (trx) => {
        const host = await insertHost(trx, req.body.name, req.body, now);
        const token = await createHostToken(trx, host.id, now, { description: "created by host add" });
        return { host, token };
      });
      return reply.status(201).send({ host: toHostJson(host, 0), token });
    },
  );

  app.patch<{ Params: { name: string }; Body: HostInput }>(
    "/api/v1/hosts/:name",
    { schema: { summary: "Edit, enable or disable a host", tags, params: nameParams, body: hostBody } },
    async (req) => {
      requireAdmin(req);
      let row = await updateHost(deps.db.kysely, req.params.name, req.body);
      if (req.body.enabled !== undefined) {
        // Enabling by hand lifts a quarantine, and infra failures before now stop counting.
        row = await deps.db.kysely
          .updateTable("hosts")
          .set(
            req.body.enabled
              ? { disabled_reason: null, enabled_at: deps.clock.now() }
              : { disabled_reason: null },
          )
          .where("id", "=", row.id)
          .returningAll()
          .executeTakeFirstOrThrow();
      }
      // New capacity or channels may let queued work run.
      deps.wake.notify();
      return hostJson(row, (await hostLoads(deps.db)).get(row.id) ?? 0);
    },
  );
}
