import type { FastifyInstance } from "fastify";
import { createUserToken, listTokens, revokeToken } from "../../../db/tokens.js";
import { requireAdmin } from "../../auth.js";
import { idParams } from "./schemas.js";

export function registerTokenRoutes(app: FastifyInstance): void {
  const { deps, auth } = app.kiln;
  const tags = ["tokens"];

  app.get(
    "/api/v1/tokens",
    { schema: { summary: "List tokens (never their secrets)", tags } },
    async (req) => {
      requireAdmin(req);
      return listTokens(deps.db.kysely);
    },
  );

  app.post<{ Body: { user: string; role?: "admin" | "user"; description?: string } }>(
    "/api/v1/tokens",
    {
      schema: {
        summary: "Create a user token (and the user if new)",
        tags,
        body: {
          type: "object",
          properties: {
            user: { type: "string" },
            role: { type: "string", enum: ["admin", "user"] },
            description: { type: "string", maxLength: 500 },
          },
          required: ["user"],
        },
      },
    },
    async (req, reply) => {
      requireAdmin(req);
      const { token, id } = await createUserToken(deps.db.kysely, req.body, deps.clock.now());
      const info = (await listTokens(deps.db.kysely)).find((t) => t.id === id);
      return reply.status(201).send({ token, info });
    },
  );

  app.delete<{ Params: { id: number } }>(
    "/api/v1/tokens/:id",
    { schema: { summary: "Revoke a token", tags, params: idParams } },
    async (req) => {
      requireAdmin(req);
      await revokeToken(deps.db.kysely, req.params.id, deps.clock.now());
      auth.clear();
      return (await listTokens(deps.db.kysely)).find((t) => t.id === req.params.id);
    },
  );
}
