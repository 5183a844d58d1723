/**
 * Moving files between the hub and a build workspace: downloads hashed (and checked) as they are
 * written, and build results read back without trusting what the build left behind — the build
 * user owns the workspace, so a "result" may be a symlink to a host file the worker (root) could
 * read. Nothing runs in the sandbox while these functions do, so checking then opening is safe.
 */
import { createHash } from "node:crypto";
import { constants, createWriteStream } from "node:fs";
import { lstat, open, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import { KilnError } from "../errors/catalogue.js";
import type { TaskContext } from "./handler.js";
import { TaskFailure } from "./handler.js";

export interface FileRef {
  name: string;
  sha256: string;
  size: number;
}

/** Largest file a build task downloads (a source tarball, a blob). */
export const MAX_DOWNLOAD_BYTES = 16 * 1024 ** 3;

/** Is `name` a plain file name (no directory part, nothing hidden by `.`/`..`, no NUL)? */
export function isPlainFileName(name: string): boolean {
  return (
    name.length > 0 &&
    name.length <= 255 &&
    !name.includes("/") &&
    !name.includes("\0") &&
    name !== "." &&
    name !== ".."
  );
}

/**
 * Streams an HTTP response body into `dest` (created, never overwritten; mode 0644) while
 * hashing it. With `expect`, a size or sha256 that differs is an error (the partial file stays
 * for the daemon to remove with the work directory).
 */
export async function saveResponse(
  res: Response,
  dest: string,
  opts: { signal: AbortSignal; maxBytes?: number; expect?: { sha256: string; size: number }; what: string },
): Promise<FileRef> {
  const max = opts.maxBytes ?? MAX_DOWNLOAD_BYTES;
  if (opts.expect && opts.expect.size > max) {
    throw new TaskFailure(
      "ARCHIVE_TOO_LARGE",
      `${opts.what} is ${opts.expect.size} bytes, over the limit of ${max}`,
    );
  }
  const hash = createHash("sha256");
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size > max)
        return done(new TaskFailure("ARCHIVE_TOO_LARGE", `${opts.what} is over the limit of ${max} bytes`));
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const body = res.body ? Readable.fromWeb(res.body as WebReadableStream<Uint8Array>) : Readable.from([]);
  await pipeline(body, counter, createWriteStream(dest, { flags: "wx", mode: 0o644 }), {
    signal: opts.signal,
  });
  const ref = { name: path.basename(dest), sha256: hash.digest("hex"), size };
  if (opts.expect && (ref.size !== opts.expect.size || ref.sha256 !== opts.expect.sha256.toLowerCase())) {
    throw new ChecksumMismatch(
      `${opts.what}: got ${ref.size} bytes with sha256 ${ref.sha256}, expected ${opts.expect.size} bytes with sha256 ${opts.expect.sha256}`,
    );
  }
  return ref;
}

/** A downloaded file is not what it should be; the caller decides whose fault that is. */
export class ChecksumMismatch extends Error {
  override name = "ChecksumMismatch";
}

/** Opens a regular file the build made, refusing symlinks anywhere below `root`. */
async function openBuildFile(root: string, rel: string): Promise<FileHandle> {
  const parts = rel.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length === 0 || parts.includes("..")) throw new Error(`bad path ${JSON.stringify(rel)}`);
  let at = root;
  for (const [i, part] of parts.entries()) {
    at = path.join(at, part);
    const st = await lstat(at);
    const last = i === parts.length - 1;
    if (st.isSymbolicLink()) throw new NotRegularFile(`${rel} is (or passes through) a symbolic link`);
    if (!last && !st.isDirectory())
      throw new NotRegularFile(`${rel}: ${parts.slice(0, i + 1).join("/")} is not a directory`);
    if (last && !st.isFile()) throw new NotRegularFile(`${rel} is not a regular file`);
  }
  const fh = await open(at, constants.O_RDONLY | constants.O_NOFOLLOW);
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    throw new NotRegularFile(`${rel} is not a regular file`);
  }
  return fh;
}

export class NotRegularFile extends Error {
  override name = "NotRegularFile";
}

/** The text of a small file the build made (e.g. debian/control of an unpacked tree). */
export async function readBuildFile(root: string, rel: string, maxBytes = 1024 * 1024): Promise<string> {
  const fh = await openBuildFile(root, rel);
  try {
    const { size } = await fh.stat();
    if (size > maxBytes) throw new NotRegularFile(`${rel} is ${size} bytes, over the limit of ${maxBytes}`);
    return (await fh.readFile()).toString("utf8");
  } finally {
    await fh.close();
  }
}

/** Files up to this size are read whole and sent with a length; larger ones are streamed. */
const WHOLE_UPLOAD_BYTES = 4 * 1024 * 1024;

/**
 * Uploads a file of the workspace as an artifact of this attempt (fenced by the epoch), hashing
 * it on the way — one read of the file, not two — and checks the hub stored what we hashed.
 */
export async function uploadBuildFile(
  ctx: Pick<TaskContext, "client" | "task" | "epoch">,
  root: string,
  name: string,
  meta: { kind: string; arch?: string | null },
): Promise<FileRef> {
  const fh = await openBuildFile(root, name);
  const hash = createHash("sha256");
  let size = 0;
  let stored;
  try {
    let body: Buffer | ReadableStream<Uint8Array>;
    if ((await fh.stat()).size <= WHOLE_UPLOAD_BYTES) {
      body = await fh.readFile();
      hash.update(body);
      size = body.length;
    } else {
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      const source = fh.createReadStream({ autoClose: false });
      source.on("error", (err) => hashing.destroy(err));
      body = Readable.toWeb(source.pipe(hashing)) as ReadableStream<Uint8Array>;
    }
    stored = await ctx.client.uploadArtifact(ctx.task.id, ctx.epoch, name, body, meta);
  } finally {
    await fh.close();
  }
  // The hub answers once it has the whole body, so every byte it stored has passed the hash.
  const ref = { name: path.basename(name), sha256: hash.digest("hex"), size };
  if (stored.sha256 !== ref.sha256 || stored.size !== ref.size) {
    throw new TaskFailure(
      "TASK_FAILED",
      `the hub stored ${name} as ${stored.size} bytes with sha256 ${stored.sha256}, but it is ${ref.size} bytes with sha256 ${ref.sha256}`,
      { infra: true },
    );
  }
  return ref;
}

/** 404s from the hub mean the input is missing: the caller's fault, not the network's. */
export function isNotFound(err: unknown): err is KilnError {
  return err instanceof KilnError && err.status === 404;
}
