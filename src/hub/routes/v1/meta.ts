import type { FastifyInstance } from "fastify";
import { sql } from "kysely";
import { VERSION } from "../../../version.js";
import { requireAuth } from "../../auth.js";

export function registerMetaRoutes(app: FastifyInstance, openapi: () => unknown): void {
  const { deps } = app.kiln;

  app.get("/healthz", { schema: { summary: "Liveness and database check", tags: ["meta"] } }, async () => {
    await sql`SELECT 1`.execute(deps.db.kysely);
    return { ok: true, version: VERSION, db: deps.db.dialect };
  });

  app.get("/api/v1/version", { schema: { summary: "The hub's version", tags: ["meta"] } }, () => ({
    version: VERSION,
  }));

  app.get("/api/v1/openapi.json", { schema: { hide: true } }, () => openapi());

  app.get("/api/v1/whoami", { schema: { summary: "Who the token belongs to", tags: ["meta"] } }, (req) => {
    const p = requireAuth(req);
    return { role: p.role, user: p.user?.name ?? null, host: p.host?.name ?? null };
  });
}
