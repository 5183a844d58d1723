/**
 * Streaming a body to a new file while hashing it: the one piece of I/O the blob store and the
 * upload areas share.
 */
import { createHash } from "node:crypto";
import { open, unlink } from "node:fs/promises";
import { KilnError } from "../errors/catalogue.js";

/** What `put`/`writeFile` accept: a Node stream (an HTTP request, a file) or any async iterable. */
export type ByteSource = AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream;

export interface HashedFile {
  sha256: string;
  size: number;
}

/**
 * Writes `source` to `tempPath` (which must not exist) while hashing it, then fsyncs (unless told
 * not to) and closes the file. On any failure — the size limit, a source error, a full disk — the
 * temp file is deleted before the error propagates, so a failed write leaves nothing behind.
 */
export async function writeHashed(
  source: ByteSource,
  tempPath: string,
  opts: {
    maxBytes?: number;
    mode?: number;
    /** fsync the file before closing it (default); false for staging files (see upload-area.ts). */
    sync?: boolean;
  } = {},
): Promise<HashedFile> {
  const maxBytes = opts.maxBytes ?? Infinity;
  if (!(maxBytes >= 0)) {
    throw new KilnError("VALIDATION_FAILED", "maxBytes must be a non-negative number", { maxBytes });
  }
  const hash = createHash("sha256");
  let size = 0;
  const fh = await open(tempPath, "wx", opts.mode ?? 0o644);
  let closed = false;
  try {
    // Leaving the loop by throwing calls the iterator's return(), which destroys a Node stream:
    // an oversized request body is aborted rather than drained.
    for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
      size += bytes.byteLength;
      if (size > maxBytes) {
        throw new KilnError("PAYLOAD_TOO_LARGE", `The content is over the limit of ${maxBytes} bytes`, {
          maxBytes,
        });
      }
      hash.update(bytes);
      await writeAll(fh, bytes);
    }
    if (opts.sync !== false) await fh.sync();
    closed = true;
    await fh.close();
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tempPath).catch(() => undefined);
    throw err;
  }
  return { sha256: hash.digest("hex"), size };
}

async function writeAll(fh: import("node:fs/promises").FileHandle, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.byteLength - off);
    off += bytesWritten;
  }
}

/** Makes a file's content durable (one written by someone else, or without its fsync). */
export async function fsyncFile(file: string): Promise<void> {
  const fh = await open(file, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Makes a rename or an unlink in `dir` durable. Filesystems that cannot fsync a directory are let be. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "EISDIR" && code !== "EPERM" && code !== "EBADF") throw err;
  } finally {
    await fh?.close();
  }
}

export function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? "");
}

/**
 * Whether a file last modified at `mtimeMs` is at least `ageMs` old. An age of 0 or less means
 * "any": a file's sub-millisecond mtime can be a little ahead of Date.now().
 */
export function isOlderThan(mtimeMs: number, ageMs: number): boolean {
  return ageMs <= 0 || Date.now() - mtimeMs >= ageMs;
}
