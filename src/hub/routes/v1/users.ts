import type { FastifyInstance } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { recordEvent } from "../../../events/outbox.js";
import { requireAdmin } from "../../auth.js";
import type { HubDeps } from "../../deps.js";

const PERM_RE = /^[a-z][a-z0-9._-]{0,63}$/;

/** Users and their permissions (a tag's `perm` names one), as Koji's grant-permission. */
export function registerUserRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln as { deps: HubDeps };
  const tags = ["users"];

  const list = async () => {
    const [users, perms] = await Promise.all([
      deps.db.kysely.selectFrom("users").selectAll().orderBy("name").execute(),
      deps.db.kysely.selectFrom("user_perms").selectAll().execute(),
    ]);
    return users.map((u) => ({
      id: u.id,
      name: u.name,
      role: u.role,
      perms: perms
        .filter((p) => p.user_id === u.id)
        .map((p) => p.perm)
        .sort(),
    }));
  };
  const userId = async (name: string) => {
    const u = await deps.db.kysely
      .selectFrom("users")
      .select("id")
      .where("name", "=", name)
      .executeTakeFirst();
    if (!u)
      throw new KilnError(
        "NOT_FOUND",
        `no user named "${name}"; \`kiln token create --user ${name}\` makes one`,
      );
    return u.id;
  };

  app.get(
    "/api/v1/users",
    { schema: { summary: "Users with their roles and permissions", tags } },
    async (req) => {
      requireAdmin(req);
      return list();
    },
  );

  app.post<{ Params: { name: string }; Body: { perm: string } }>(
    "/api/v1/users/:name/perms",
    {
      schema: {
        summary: "Grant a permission",
        tags,
        params: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
        body: { type: "object", properties: { perm: { type: "string" } }, required: ["perm"] },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      if (!PERM_RE.test(req.body.perm))
        throw new KilnError("INVALID_NAME", `"${req.body.perm}" is not a valid permission name`);
      const id = await userId(req.params.name);
      const has = await deps.db.kysely
        .selectFrom("user_perms")
        .select("perm")
        .where("user_id", "=", id)
        .where("perm", "=", req.body.perm)
        .executeTakeFirst();
      if (!has)
        await deps.db.kysely.insertInto("user_perms").values({ user_id: id, perm: req.body.perm }).execute();
      await recordEvent(
        deps.db.kysely,
        "user.perm_granted",
        { user: req.params.name, perm: req.body.perm },
        p.user?.name ?? null,
        deps.clock.now(),
      );
      return (await list()).find((u) => u.id === id);
    },
  );

  app.delete<{ Params: { name: string; perm: string } }>(
    "/api/v1/users/:name/perms/:perm",
    {
      schema: {
        summary: "Revoke a permission",
        tags,
        params: {
          type: "object",
          properties: { name: { type: "string" }, perm: { type: "string" } },
          required: ["name", "perm"],
        },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      const id = await userId(req.params.name);
      await deps.db.kysely
        .deleteFrom("user_perms")
        .where("user_id", "=", id)
        .where("perm", "=", req.params.perm)
        .execute();
      await recordEvent(
        deps.db.kysely,
        "user.perm_revoked",
        { user: req.params.name, perm: req.params.perm },
        p.user?.name ?? null,
        deps.clock.now(),
      );
      return (await list()).find((u) => u.id === id);
    },
  );
}
