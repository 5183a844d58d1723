import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { KilnError } from "../../errors/catalogue.js";

/**
 * The UI's files are served straight from src/web: plain ES modules and CSS need no compiling,
 * and the path is the same whether this file runs from src/ (tests) or dist/ (the built hub).
 */
export const WEB_ROOT = fileURLToPath(new URL("../../../src/web/", import.meta.url));

const ASSET_PREFIX = "/ui/assets/";
const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".html": "text/html; charset=utf-8",
};

export interface WebAsset {
  name: string;
  /** `app.1a2b3c4d5e6f.js`: the name under which it may be cached forever. */
  hashedName: string;
  type: string;
  body: Buffer;
  etag: string;
}

export interface WebBundle {
  assets: Map<string, WebAsset>;
  index: { body: Buffer; etag: string; csp: string };
}

function etagOf(body: Buffer | string): string {
  return `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`;
}

/**
 * Reads the UI once and names every asset after its content. index.html gets an import map
 * from plain to hashed module URLs, so modules keep importing `./api.js` and the browser still
 * fetches (and caches for good) the hashed file: a new release never mixes old and new modules.
 */
export function loadWebBundle(dir = WEB_ROOT): WebBundle {
  const assets = new Map<string, WebAsset>();
  for (const name of readdirSync(dir).sort()) {
    const ext = path.extname(name);
    const type = TYPES[ext];
    if (!type || name === "index.html") continue;
    const body = readFileSync(path.join(dir, name));
    const hash = createHash("sha256").update(body).digest("hex").slice(0, 12);
    const hashedName = `${name.slice(0, -ext.length)}.${hash}${ext}`;
    const asset = { name, hashedName, type, body, etag: etagOf(body) };
    assets.set(name, asset);
    assets.set(hashedName, asset);
  }
  const imports: Record<string, string> = {};
  for (const [key, a] of assets) {
    if (key === a.name && a.name.endsWith(".js"))
      imports[ASSET_PREFIX + a.name] = ASSET_PREFIX + a.hashedName;
  }
  const importMap = JSON.stringify({ imports });
  let html = readFileSync(path.join(dir, "index.html"), "utf8");
  for (const [key, a] of assets) {
    if (key === a.name)
      html = html.split(`"${ASSET_PREFIX}${a.name}"`).join(`"${ASSET_PREFIX}${a.hashedName}"`);
  }
  html = html.replace("<!-- importmap -->", `<script type="importmap">${importMap}</script>`);
  // The import map is the only inline script; its hash lets the policy forbid every other one.
  const mapHash = createHash("sha256").update(importMap).digest("base64");
  const csp = [
    "default-src 'self'",
    `script-src 'self' 'sha256-${mapHash}'`,
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
  const body = Buffer.from(html);
  return { assets, index: { body, etag: etagOf(body), csp } };
}

function fresh(req: FastifyRequest, etag: string): boolean {
  const header = req.headers["if-none-match"];
  return typeof header === "string" && header.split(/\s*,\s*/).some((t) => t === etag || t === `W/${etag}`);
}

/** Serves the web UI at `/` (and `/ui`), its assets under `/ui/assets/`. Routes are hash-based. */
export function registerWebRoutes(app: FastifyInstance, bundle: WebBundle = loadWebBundle()): void {
  const opts = { config: { public: true }, schema: { hide: true } };

  const sendIndex = (req: FastifyRequest, reply: FastifyReply) => {
    void reply
      .header("cache-control", "no-cache")
      .header("etag", bundle.index.etag)
      .header("content-security-policy", bundle.index.csp)
      .header("x-content-type-options", "nosniff")
      .header("referrer-policy", "same-origin");
    if (fresh(req, bundle.index.etag)) return reply.status(304).send();
    return reply.type("text/html; charset=utf-8").send(bundle.index.body);
  };
  app.get("/", opts, sendIndex);
  app.get("/ui", opts, sendIndex);
  app.get("/ui/", opts, sendIndex);

  // What the UI must know before sign-in; fetched only without a token, so no 401 is logged.
  app.get("/ui/config.json", opts, (_req, reply) =>
    reply
      .header("cache-control", "no-cache")
      .send({ publicReads: app.kiln.deps.config.uiPublicReads === true }),
  );

  app.get<{ Params: { file: string } }>(`${ASSET_PREFIX}:file`, opts, (req, reply) => {
    const asset = bundle.assets.get(req.params.file);
    if (!asset) throw new KilnError("NOT_FOUND", `no UI asset ${req.params.file}`);
    const hashed = req.params.file === asset.hashedName;
    void reply
      .header("cache-control", hashed ? "public, max-age=31536000, immutable" : "no-cache")
      .header("etag", asset.etag)
      .header("x-content-type-options", "nosniff");
    if (fresh(req, asset.etag)) return reply.status(304).send();
    return reply.type(asset.type).send(asset.body);
  });
}
