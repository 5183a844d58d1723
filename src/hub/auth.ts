import type { FastifyReply, FastifyRequest } from "fastify";
import { findPrincipal, type Principal, type Role } from "../db/tokens.js";
import { KilnError } from "../errors/catalogue.js";
import type { HubDeps } from "./deps.js";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /**
     * Served to anyone, and any Authorization header is ignored: apt sends the credentials of
     * its auth.conf or of a proxy, which are no Kiln token and must not turn into a 401.
     */
    public?: boolean;
    /** Part of the Aptly-compatible API, which `aptly_anonymous` opens to tokenless callers. */
    aptly?: boolean;
  }
}

const CACHE_MS = 2000;

/** Who tokenless calls to the Aptly API act as when `aptly_anonymous` is on: a plain user. */
export const APTLY_ANONYMOUS: Principal = {
  tokenId: 0,
  role: "user",
  user: { id: 0, name: "aptly" },
  host: null,
};

/** Who tokenless reads act as when `ui_public_reads` is on: no user, so nothing mutating passes. */
export const PUBLIC_READER: Principal = { tokenId: 0, role: "user", user: null, host: null };

/**
 * Resolves bearer tokens (and HTTP Basic, whose password is the token, for proxies and Aptly
 * clients) to a principal. A short cache keeps the hot worker calls off the tokens table;
 * revoking through this hub clears it at once.
 */
export class Authenticator {
  private readonly cache = new Map<string, { principal: Principal | undefined; at: number }>();
  private readonly lastUsedWrites = new Map<number, number>();

  constructor(private readonly deps: HubDeps) {}

  clear(): void {
    this.cache.clear();
  }

  tokenFrom(req: FastifyRequest): string | undefined {
    const header = req.headers.authorization;
    if (!header) return undefined;
    const [scheme, value] = header.split(/\s+/, 2);
    if (!value) return undefined;
    if (/^bearer$/i.test(scheme ?? "")) return value;
    if (/^basic$/i.test(scheme ?? "")) {
      const decoded = Buffer.from(value, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      return colon >= 0 ? decoded.slice(colon + 1) : decoded;
    }
    return undefined;
  }

  async resolve(token: string): Promise<Principal | undefined> {
    const now = this.deps.clock.now();
    const hit = this.cache.get(token);
    if (hit && now - hit.at < CACHE_MS) return hit.principal;
    const principal = await findPrincipal(this.deps.db.kysely, token);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(token, { principal, at: now });
    if (principal && now - (this.lastUsedWrites.get(principal.tokenId) ?? 0) > 60_000) {
      this.lastUsedWrites.set(principal.tokenId, now);
      await this.deps.db.kysely
        .updateTable("tokens")
        .set({ last_used_at: now })
        .where("id", "=", principal.tokenId)
        .execute();
    }
    return principal;
  }

  /** Fastify onRequest hook: attach the principal when a token is given; reject a bad one. */
  hook = async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    req.principal = null;
    if (req.routeOptions.config.public) return;
    const token = this.tokenFrom(req);
    if (token === undefined) {
      if (req.routeOptions.config.aptly && this.deps.config.aptlyAnonymous) req.principal = APTLY_ANONYMOUS;
      else if (this.deps.config.uiPublicReads && (req.method === "GET" || req.method === "HEAD")) {
        req.principal = PUBLIC_READER;
      }
      return;
    }
    const principal = await this.resolve(token);
    if (!principal) throw new KilnError("TOKEN_INVALID");
    req.principal = principal;
  };
}

export function requireAuth(req: FastifyRequest): Principal {
  if (!req.principal) throw new KilnError("AUTH_REQUIRED");
  return req.principal;
}

export function requireRole(req: FastifyRequest, ...roles: Role[]): Principal {
  const p = requireAuth(req);
  if (!roles.includes(p.role)) {
    if (roles.length === 1 && roles[0] === "admin") throw new KilnError("ADMIN_REQUIRED");
    if (roles.length === 1 && roles[0] === "host") throw new KilnError("HOST_REQUIRED");
    throw new KilnError("FORBIDDEN", `this call needs a ${roles.join(" or ")} token`);
  }
  return p;
}

export function requireAdmin(req: FastifyRequest): Principal {
  return requireRole(req, "admin");
}

/** A user (admin or user role) — not a host. */
export function requireUser(req: FastifyRequest): Principal & { user: { id: number; name: string } } {
  const p = requireRole(req, "admin", "user");
  if (!p.user) throw new KilnError("FORBIDDEN", "this token belongs to no user");
  return p as Principal & { user: { id: number; name: string } };
}

/** A host token acting for `name` ("me" or its own name). */
export function requireHost(
  req: FastifyRequest,
  name = "me",
): Principal & { host: { id: number; name: string } } {
  const p = requireRole(req, "host");
  if (!p.host) throw new KilnError("HOST_REQUIRED");
  if (name !== "me" && name !== p.host.name) {
    throw new KilnError("HOST_MISMATCH", `this token belongs to host "${p.host.name}", not "${name}"`);
  }
  return p as Principal & { host: { id: number; name: string } };
}
