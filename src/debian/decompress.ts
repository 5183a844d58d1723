/**
 * Streaming decompression with a byte limit, for the members of a .deb. gzip runs in-process
 * (zlib); xz, zstd, bzip2 and lzma run the system tools with stdin/stdout piped. Output is
 * counted as it arrives and the stream is abandoned (the tool killed) as soon as it passes the
 * limit, so a decompression bomb costs at most the limit plus a chunk.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { KilnError } from "../errors/catalogue.js";
import { debianError, decompressionLimitError } from "./debian-error.js";
import { xzDecompress } from "./xz.js";

/** Chunks of bytes: a stream, an async generator, or simply an array of buffers. */
export type ByteChunks = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export type Compression = "none" | "gzip" | "xz" | "zstd" | "bzip2" | "lzma";

export interface DecompressOptions {
  /** Abort with ARCHIVE_TOO_LARGE once more than this many bytes have come out. */
  maxBytes: number;
  /** Names the stream in error messages, e.g. "foo.deb: data.tar.xz". */
  name?: string;
}

const EXTENSIONS: Readonly<Record<string, Compression>> = {
  "": "none",
  ".gz": "gzip",
  ".xz": "xz",
  ".zst": "zstd",
  ".bz2": "bzip2",
  ".lzma": "lzma",
};

/** `.xz` → "xz", "" → "none"; undefined for an extension dpkg does not know. */
export function compressionFromExtension(ext: string): Compression | undefined {
  return Object.hasOwn(EXTENSIONS, ext) ? EXTENSIONS[ext] : undefined;
}

// Memory the external decompressors may use: xz -9 needs 65 MiB, zstd --long=27 128 MiB.
const TOOL_MEMORY_LIMIT = "256MiB";

const TOOLS: Readonly<Record<Exclude<Compression, "none" | "gzip">, readonly [string, ...string[]]>> = {
  xz: ["xz", "--decompress", "--stdout", "--quiet", `--memlimit-decompress=${TOOL_MEMORY_LIMIT}`],
  lzma: [
    "xz",
    "--format=lzma",
    "--decompress",
    "--stdout",
    "--quiet",
    `--memlimit-decompress=${TOOL_MEMORY_LIMIT}`,
  ],
  zstd: ["zstd", "--decompress", "--stdout", "--quiet", "--memory=256MB"],
  bzip2: ["bzip2", "--decompress", "--stdout", "--quiet"],
};

/** The decompressed bytes of `input`, in chunks. Stop iterating at any time: the work stops too. */
export async function* decompress(
  input: ByteChunks,
  compression: Compression,
  options: DecompressOptions,
): AsyncGenerator<Buffer, void, undefined> {
  const name = options.name ?? "stream";
  let count = 0;
  const counted = (chunk: Buffer): Buffer => {
    count += chunk.length;
    if (count > options.maxBytes) throw decompressionLimitError(name, options.maxBytes);
    return chunk;
  };
  switch (compression) {
    case "none":
      for await (const chunk of input)
        yield counted(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return;
    case "gzip":
      yield* gunzip(input, name, counted);
      return;
    case "xz":
    case "lzma":
    case "zstd":
    case "bzip2":
      yield* runTool(TOOLS[compression], input, name, counted);
      return;
  }
}

async function* gunzip(
  input: ByteChunks,
  name: string,
  counted: (chunk: Buffer) => Buffer,
): AsyncGenerator<Buffer, void, undefined> {
  const source = Readable.from(input, { objectMode: false });
  const gz = zlib.createGunzip();
  // Errors of either side reach us through `gz`, which pipeline() destroys with them.
  pipeline(source, gz).catch(() => undefined);
  try {
    for await (const chunk of gz as AsyncIterable<Buffer>) yield counted(chunk);
  } catch (err) {
    if (isZlibError(err)) {
      throw debianError("ARCHIVE_INVALID", `${name}: corrupt gzip data (${err.message})`);
    }
    throw err;
  } finally {
    gz.destroy();
    source.destroy();
  }
}

/** Compressed input up to this size may be decompressed at once, in this thread. */
export const SMALL_INPUT_MAX = 64 * 1024;

/**
 * The whole decompressed content of a small buffer, decompressed in this thread: a control
 * member of a few kilobytes takes microseconds, against a stream's setup or a process's start.
 * gzip through zlib, xz through the decoder in xz.ts; undefined for other compressions, larger
 * input, or an xz feature that decoder leaves to the tool — decompress() then does it. The same
 * limit and the same errors as decompress().
 */
export function decompressSmall(
  input: Buffer,
  compression: Compression,
  options: DecompressOptions,
): Buffer | undefined {
  if (input.length > SMALL_INPUT_MAX) return undefined;
  const name = options.name ?? "stream";
  if (compression === "xz") return xzDecompress(input, options.maxBytes, name);
  if (compression !== "gzip") return undefined;
  const tooLarge = () => decompressionLimitError(name, options.maxBytes);
  let out: Buffer;
  try {
    // One byte past the limit is enough to know it is over.
    out = zlib.gunzipSync(input, { maxOutputLength: options.maxBytes + 1 });
  } catch (err) {
    if ((err as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") throw tooLarge();
    if (isZlibError(err)) throw debianError("ARCHIVE_INVALID", `${name}: corrupt gzip data (${err.message})`);
    throw err;
  }
  if (out.length > options.maxBytes) throw tooLarge();
  return out;
}

function isZlibError(err: unknown): err is Error {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof Error && typeof code === "string" && code.startsWith("Z_");
}

async function* runTool(
  command: readonly [string, ...string[]],
  input: ByteChunks,
  name: string,
  counted: (chunk: Buffer) => Buffer,
): AsyncGenerator<Buffer, void, undefined> {
  const [cmd, ...args] = command;
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal })),
  );
  let spawnError: Error | undefined;
  child.on("error", (err) => (spawnError ??= err));
  try {
    await once(child, "spawn");
  } catch (err) {
    throw new KilnError("INTERNAL", `Cannot run ${cmd} to decompress ${name}: ${(err as Error).message}`);
  }

  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  child.stdin.on("error", () => undefined); // EPIPE when the tool stops early; its exit status tells
  let inputError: Error | undefined;
  const source = Readable.from(input, { objectMode: false });
  const pumped = pipeline(source, child.stdin).catch((err: unknown) => {
    inputError = err instanceof Error ? err : new Error(String(err));
  });

  let finished = false;
  try {
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield counted(chunk);
    const { code, signal } = await closed;
    await pumped;
    finished = true;
    if (inputError !== undefined && !isPipeError(inputError)) throw inputError;
    if (code !== 0) {
      const why = stderr.trim() || (signal ? `killed by ${signal}` : `exit status ${code}`);
      throw debianError("ARCHIVE_INVALID", `${name}: ${cmd} cannot decompress it (${why})`);
    }
    if (spawnError !== undefined) throw spawnError;
  } finally {
    if (!finished) {
      source.destroy();
      child.stdin.destroy();
      child.stdout.destroy();
      child.kill("SIGKILL");
    }
  }
}

function isPipeError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "EPIPE" || code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ERR_STREAM_DESTROYED";
}
