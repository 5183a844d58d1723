/**
 * `/apt/…`: the published tree under `<data>/public/`, read by apt without a token, plus the
 * archive keyring; `/repos/…`: the tag repos under `<data>/repos/` (what workers install
 * Build-Depends from), served the same way. Publications switch by renaming symlinks while
 * requests are in flight, so a request resolves its path once, opens the file once and answers
 * everything from that fd.
 */
import { createHash } from "node:crypto";
import { constants, type BigIntStats } from "node:fs";
import { open, readlink, realpath, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { KilnError } from "../../errors/catalogue.js";

export const APT_PREFIX = "/apt/";
export const REPOS_PREFIX = "/repos/";
export const KEYRING_FILE = "kiln-archive-keyring.asc";

const IMMUTABLE = "public, max-age=31536000, immutable";
/** Indexes change with every publication: always revalidate (cheap, thanks to the validators). */
const REVALIDATE = "no-cache";

/**
 * The request path's segments, decoded. `..`, `.`, empty segments, NUL, backslashes and encoded
 * slashes are refused outright; a trailing slash asks for a directory (undefined: 404).
 */
export function parseAptPath(url: string): string[] | undefined {
  return parseTreePath(url, APT_PREFIX);
}

/** parseAptPath for the tree served under `urlPrefix` (`/apt/`, `/repos/`). */
export function parseTreePath(url: string, urlPrefix: string): string[] | undefined {
  const pathname = url.split("?", 1)[0] ?? "";
  if (!pathname.startsWith(urlPrefix)) throw new KilnError("APT_PATH_INVALID");
  const raw = pathname.slice(urlPrefix.length).split("/");
  if (raw.length > 0 && raw[raw.length - 1] === "") return undefined;
  if (pathname.length > 4096) throw new KilnError("APT_PATH_INVALID", "the path is too long");
  return raw.map((part) => {
    let segment: string;
    try {
      segment = decodeURIComponent(part);
    } catch {
      throw new KilnError("APT_PATH_INVALID", "the path is not valid percent-encoding");
    }
    if (
      segment === "" ||
      segment === "." ||
      segment === ".." ||
      segment.length > 255 ||
      /[/\\]/.test(segment) ||
      [...segment].some((c) => c < " " || c === "\u007f")
    ) {
      throw new KilnError("APT_PATH_INVALID", `the path segment ${JSON.stringify(segment)} is not allowed`);
    }
    return segment;
  });
}

/** Where the segments point: a by-hash copy, a pool file, or anything else (indexes). */
function isByHash(segments: readonly string[]): boolean {
  const i = segments.lastIndexOf("by-hash");
  return i >= 0 && i === segments.length - 3;
}

export function contentTypeFor(segments: readonly string[]): string {
  const name = segments[segments.length - 1] ?? "";
  if (isByHash(segments)) return "application/octet-stream";
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  switch (ext) {
    case "":
      // Release, InRelease, Packages, Sources, Contents-amd64, …
      return "text/plain; charset=utf-8";
    case "deb":
    case "udeb":
    case "ddeb":
      return "application/vnd.debian.binary-package";
    case "dsc":
    case "changes":
    case "buildinfo":
    case "txt":
      return "text/plain; charset=utf-8";
    case "gz":
      return "application/gzip";
    case "xz":
      return "application/x-xz";
    case "bz2":
      return "application/x-bzip2";
    case "zst":
      return "application/zstd";
    case "lzma":
      return "application/x-lzma";
    case "gpg":
    case "sig":
      return "application/pgp-signature";
    case "asc":
      return "application/pgp-keys";
    default:
      return "application/octet-stream";
  }
}

/** Pool files are never rewritten with other content and by-hash names are their content. */
export function cacheControlFor(segments: readonly string[]): string {
  if (isByHash(segments)) return IMMUTABLE;
  const dirs = segments.slice(0, -1);
  return dirs.includes("pool") && !dirs.includes("dists") ? IMMUTABLE : REVALIDATE;
}

export type ByteRange = { start: number; end: number };

/**
 * A `Range` header against a file of `size` bytes: one range, "unsatisfiable", or undefined
 * when it is to be ignored (malformed, another unit, or several ranges: the whole file is sent).
 */
export function parseRange(header: string, size: number): ByteRange | "unsatisfiable" | undefined {
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return undefined;
  const specs = (m[1] ?? "").split(",");
  if (specs.length !== 1) return undefined;
  const spec = /^\s*(\d*)\s*-\s*(\d*)\s*$/.exec(specs[0] ?? "");
  if (!spec) return undefined;
  const [, first = "", last = ""] = spec;
  if (first === "" && last === "") return undefined;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (last !== "" && Number(last) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end: last === "" ? size - 1 : Math.min(Number(last), size - 1) };
}

/** What a representation offers as validators. */
export interface Validators {
  size: number;
  /** Strong, quoted. */
  etag: string;
  lastModified?: Date | undefined;
}

export interface RequestConditions {
  ifNoneMatch?: string | undefined;
  ifModifiedSince?: string | undefined;
  range?: string | undefined;
  ifRange?: string | undefined;
}

export type ServePlan =
  { status: 200 } | { status: 206; range: ByteRange } | { status: 304 } | { status: 416 };

function opaqueTag(tag: string): string {
  return tag.trim().replace(/^W\//, "");
}

/** Seconds: HTTP dates have no finer resolution. */
function seconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

/** RFC 9110's order: If-None-Match (or else If-Modified-Since), then Range under If-Range. */
export function planResponse(conditions: RequestConditions, rep: Validators): ServePlan {
  if (conditions.ifNoneMatch !== undefined) {
    const tags = conditions.ifNoneMatch.split(",").map((t) => t.trim());
    // A weak comparison: W/"x" matches "x".
    if (tags.includes("*") || tags.some((t) => opaqueTag(t) === rep.etag)) return { status: 304 };
  } else if (conditions.ifModifiedSince !== undefined && rep.lastModified) {
    const since = new Date(conditions.ifModifiedSince);
    if (!Number.isNaN(since.getTime()) && seconds(rep.lastModified) <= seconds(since)) return { status: 304 };
  }
  if (conditions.range === undefined) return { status: 200 };
  if (conditions.ifRange !== undefined) {
    const v = conditions.ifRange.trim();
    const fresh =
      v.startsWith('"') || v.startsWith("W/")
        ? v === rep.etag // a strong comparison: a weak tag never matches
        : !!rep.lastModified && seconds(new Date(v)) === seconds(rep.lastModified);
    if (!fresh) return { status: 200 };
  }
  const range = parseRange(conditions.range, rep.size);
  if (range === undefined) return { status: 200 };
  if (range === "unsatisfiable") return { status: 416 };
  return { status: 206, range };
}

function conditionsOf(req: FastifyRequest): RequestConditions {
  const h = req.headers;
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(", ") : v);
  return {
    ifNoneMatch: one(h["if-none-match"]),
    ifModifiedSince: one(h["if-modified-since"]),
    range: one(h.range),
    ifRange: one(h["if-range"]),
  };
}

interface Body {
  rep: Validators;
  contentType: string;
  cacheControl: string;
  /** The bytes of a range, as a stream or a buffer; called at most once. */
  read(range: ByteRange): NodeJS.ReadableStream | Buffer;
  /** Called instead when the body will not be read (HEAD, 304, 416). */
  discard(): void;
}

/** Sends the answer the request's conditions call for; `body` is read only for a 200 or 206 GET. */
function answer(req: FastifyRequest, reply: FastifyReply, body: Body): FastifyReply {
  const { rep } = body;
  const plan = planResponse(conditionsOf(req), rep);
  void reply
    .header("etag", rep.etag)
    .header("cache-control", body.cacheControl)
    .header("accept-ranges", "bytes")
    // Package files are uploaded by users: never let a browser guess HTML out of one.
    .header("x-content-type-options", "nosniff");
  if (rep.lastModified) void reply.header("last-modified", rep.lastModified.toUTCString());
  switch (plan.status) {
    case 304:
      body.discard();
      return reply.status(304).send();
    case 416:
      body.discard();
      return reply
        .status(416)
        .header("content-range", `bytes */${rep.size}`)
        .send(
          new KilnError(
            "RANGE_NOT_SATISFIABLE",
            `the range ${req.headers.range ?? ""} is not in the file's ${rep.size} bytes`,
          ).toJSON(),
        );
    case 200:
    case 206: {
      const range = plan.status === 206 ? plan.range : { start: 0, end: rep.size - 1 };
      void reply
        .status(plan.status)
        .header("content-type", body.contentType)
        .header("content-length", range.end - range.start + 1);
      if (plan.status === 206)
        void reply.header("content-range", `bytes ${range.start}-${range.end}/${rep.size}`);
      if (req.method === "HEAD" || rep.size === 0) {
        body.discard();
        return reply.send();
      }
      return reply.send(body.read(range));
    }
  }
}

/** Is the file open on `fd` still inside `root`? Linux tells through /proc; elsewhere trust the open. */
async function openedInside(fd: number, root: string): Promise<boolean> {
  let target: string;
  try {
    target = await readlink(`/proc/self/fd/${fd}`);
  } catch {
    return true;
  }
  return target.startsWith(`${root}${path.sep}`);
}

/** Opens the file `segments` names under `root`, refusing anything that resolves outside it. */
async function openPublished(
  root: string,
  segments: readonly string[],
): Promise<{ fh: FileHandle; stat: BigIntStats } | undefined> {
  let realRoot: string;
  let real: string;
  try {
    realRoot = await realpath(root);
    real = await realpath(path.join(root, ...segments));
  } catch {
    return undefined;
  }
  if (!real.startsWith(`${realRoot}${path.sep}`)) return undefined;
  let fh: FileHandle;
  try {
    // O_NOFOLLOW: the last component cannot have become a link since realpath; O_NONBLOCK: a
    // FIFO does not hang the request (it is refused below as not a regular file).
    fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const stat = await fh.stat({ bigint: true });
    if (stat.isFile() && (await openedInside(fh.fd, realRoot))) return { fh, stat };
  } catch {
    // Fall through to close.
  }
  await fh.close();
  return undefined;
}

function notFound(urlPrefix: string, segments: readonly string[] | undefined, url: string): KilnError {
  const shown = segments ? `${urlPrefix}${segments.join("/")}` : url.split("?", 1)[0];
  return new KilnError("NOT_FOUND", `no such file ${shown}`);
}

export function registerAptRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;

  // Before the wildcard: the keyring comes from the archive key, not from a file.
  app.route({
    method: ["GET", "HEAD"],
    url: `${APT_PREFIX}${KEYRING_FILE}`,
    config: { public: true },
    schema: { hide: true },
    handler: async (req, reply) => {
      const key = Buffer.from(await deps.archiveKey.exportPublicKey(), "utf8");
      const etag = `"${createHash("sha256").update(key).digest("hex").slice(0, 32)}"`;
      return answer(req, reply, {
        // No Last-Modified: an imported key may be older than the one it replaces, and a date
        // going back would make caches keep the old key.
        rep: { size: key.length, etag },
        contentType: "application/pgp-keys",
        cacheControl: REVALIDATE,
        read: (r) => key.subarray(r.start, r.end + 1),
        discard: () => undefined,
      });
    },
  });

  registerTreeRoute(app, APT_PREFIX, path.resolve(deps.config.data, "public"));
  // Tag repos are read by workers' apt inside buildroots, which has no token either.
  registerTreeRoute(app, REPOS_PREFIX, path.resolve(deps.config.data, "repos"));
}

/** Serves the files under `root` at `urlPrefix*`, publicly. */
function registerTreeRoute(app: FastifyInstance, urlPrefix: string, root: string): void {
  app.route({
    method: ["GET", "HEAD"],
    url: `${urlPrefix}*`,
    config: { public: true },
    schema: { hide: true },
    handler: async (req, reply) => {
      const segments = parseTreePath(req.url, urlPrefix);
      // Directories are not listed (as Aptly's file server does not by default); dot names are
      // Kiln's own working files (generations, temporaries), reached only through the links.
      if (!segments || segments.some((s) => s.startsWith("."))) throw notFound(urlPrefix, segments, req.url);
      const opened = await openPublished(root, segments);
      if (!opened) throw notFound(urlPrefix, segments, req.url);
      const { fh, stat } = opened;
      const size = Number(stat.size);
      try {
        return answer(req, reply, {
          rep: {
            size,
            etag: `"${stat.size.toString(16)}-${stat.mtimeNs.toString(16)}-${stat.ino.toString(16)}"`,
            lastModified: new Date(Number(stat.mtimeMs)),
          },
          contentType: contentTypeFor(segments),
          cacheControl: cacheControlFor(segments),
          read: (r) => fh.createReadStream({ start: r.start, end: r.end, autoClose: true }),
          discard: () => void fh.close().catch(() => undefined),
        });
      } catch (err) {
        await fh.close().catch(() => undefined);
        throw err;
      }
    },
  });
}
