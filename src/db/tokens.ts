import { createHash, randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import type { TokenJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import type { Database } from "./schema.js";

export type Role = "admin" | "user" | "host";
export const USER_NAME_RE = /^[a-z_][a-z0-9._-]{0,63}$/;

/** 256 random bits; only the SHA-256 of a token is stored. */
export function generateToken(): string {
  return `kiln_${randomBytes(32).toString("base64url")}`;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export interface Principal {
  tokenId: number;
  role: Role;
  user: { id: number; name: string } | null;
  host: { id: number; name: string } | null;
}

export async function findPrincipal(db: Kysely<Database>, token: string): Promise<Principal | undefined> {
  const row = await db
    .selectFrom("tokens")
    .leftJoin("users", "users.id", "tokens.user_id")
    .leftJoin("hosts", "hosts.id", "tokens.host_id")
    .select([
      "tokens.id as id",
      "tokens.role as role",
      "tokens.revoked_at as revoked_at",
      "users.id as user_id",
      "users.name as user_name",
      "hosts.id as host_id",
      "hosts.name as host_name",
    ])
    .where("tokens.token_hash", "=", hashToken(token))
    .executeTakeFirst();
  if (!row || row.revoked_at !== null) return undefined;
  return {
    tokenId: row.id,
    role: row.role as Role,
    user: row.user_id !== null && row.user_name !== null ? { id: row.user_id, name: row.user_name } : null,
    host: row.host_id !== null && row.host_name !== null ? { id: row.host_id, name: row.host_name } : null,
  };
}

/** Creates the user if needed (or changes its role when one is given) and a token for it. */
export async function createUserToken(
  db: Kysely<Database>,
  input: { user: string; role?: "admin" | "user"; description?: string | null },
  now: number,
): Promise<{ token: string; id: number }> {
  if (!USER_NAME_RE.test(input.user)) {
    throw new KilnError(
      "INVALID_NAME",
      `"${input.user}" is not a valid user name (lowercase letters, digits, . _ -)`,
    );
  }
  let user = await db.selectFrom("users").selectAll().where("name", "=", input.user).executeTakeFirst();
  if (!user) {
    user = await db
      .insertInto("users")
      .values({ name: input.user, role: input.role ?? "user", created_at: now })
      .returningAll()
      .executeTakeFirstOrThrow();
  } else if (input.role && input.role !== user.role) {
    await db.updateTable("users").set({ role: input.role }).where("id", "=", user.id).execute();
  }
  const token = generateToken();
  const row = await db
    .insertInto("tokens")
    .values({
      user_id: user.id,
      host_id: null,
      role: input.role ?? user.role,
      description: input.description ?? null,
      token_hash: hashToken(token),
      created_at: now,
      last_used_at: null,
      revoked_at: null,
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  return { token, id: row.id };
}

/** A new token for a host; with `replace`, the host's earlier tokens are revoked. */
export async function createHostToken(
  db: Kysely<Database>,
  hostId: number,
  now: number,
  opts: { replace?: boolean; description?: string } = {},
): Promise<string> {
  if (opts.replace) {
    await db
      .updateTable("tokens")
      .set({ revoked_at: now })
      .where("host_id", "=", hostId)
      .where("revoked_at", "is", null)
      .execute();
  }
  const token = generateToken();
  await db
    .insertInto("tokens")
    .values({
      user_id: null,
      host_id: hostId,
      role: "host",
      description: opts.description ?? null,
      token_hash: hashToken(token),
      created_at: now,
      last_used_at: null,
      revoked_at: null,
    })
    .execute();
  return token;
}

export async function listTokens(db: Kysely<Database>): Promise<TokenJson[]> {
  const rows = await db
    .selectFrom("tokens")
    .leftJoin("users", "users.id", "tokens.user_id")
    .leftJoin("hosts", "hosts.id", "tokens.host_id")
    .select([
      "tokens.id as id",
      "tokens.role as role",
      "tokens.description as description",
      "tokens.created_at as created_at",
      "tokens.last_used_at as last_used_at",
      "tokens.revoked_at as revoked_at",
      "users.name as user_name",
      "hosts.name as host_name",
    ])
    .orderBy("tokens.id")
    .execute();
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return rows.map((r) => ({
    id: r.id,
    user: r.user_name,
    host: r.host_name,
    role: r.role as Role,
    description: r.description,
    createdAt: new Date(r.created_at).toISOString(),
    lastUsedAt: iso(r.last_used_at),
    revokedAt: iso(r.revoked_at),
  }));
}

export async function revokeToken(db: Kysely<Database>, id: number, now: number): Promise<void> {
  const res = await db
    .updateTable("tokens")
    .set({ revoked_at: now })
    .where("id", "=", id)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  if (res.numUpdatedRows === 0n) {
    const exists = await db.selectFrom("tokens").select("id").where("id", "=", id).executeTakeFirst();
    if (!exists) throw new KilnError("TOKEN_NOT_FOUND", `no token ${id}; see \`kiln token list\``);
  }
}
