/**
 * A streaming tar reader for the members of a .deb: ustar, GNU (`././@LongLink` names) and pax
 * (`x` extended headers). It never extracts anything; it yields entries, and reads an entry's
 * content only when asked. Paths that could escape a directory are refused, as are archives
 * over the entry-count and size limits.
 */
import { debianError, quote } from "./debian-error.js";
import type { ByteChunks } from "./decompress.js";

export type TarEntryType =
  "file" | "directory" | "symlink" | "hardlink" | "character-device" | "block-device" | "fifo";

export interface TarEntry {
  /** As stored, e.g. `./usr/bin/hello`. Never absolute, never with a `..` component. */
  path: string;
  type: TarEntryType;
  /** Bytes of content; 0 for everything but regular files. */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the Unix epoch. */
  mtime: number;
  /** Symlink target (may be absolute: it is only recorded) or hardlink target (checked like a path). */
  linkTarget?: string;
  /** Present when `readContent` asked for it. */
  content?: Buffer;
}

export interface TarLimits {
  maxEntries: number;
  /** Largest single entry. */
  maxEntrySize: number;
  /** Sum of all entries' sizes. */
  maxTotalSize: number;
  /** Largest content `readContent` may ask to hold in memory. */
  maxContentSize: number;
  maxPathLength: number;
  /** Largest pax or GNU long-name header payload. */
  maxExtendedHeaderSize: number;
}

export const DEFAULT_TAR_LIMITS: Readonly<TarLimits> = {
  maxEntries: 100_000,
  maxEntrySize: 4 * 1024 ** 3,
  maxTotalSize: 16 * 1024 ** 3,
  maxContentSize: 16 * 1024 * 1024,
  maxPathLength: 4096,
  maxExtendedHeaderSize: 1024 * 1024,
};

export interface ReadTarOptions {
  limits?: Partial<TarLimits>;
  /** Called for each regular file before it is yielded: true to get its bytes in `content`. */
  readContent?: (entry: TarEntry) => boolean;
  /** Names the archive in error messages, e.g. "foo.deb: control.tar.xz". */
  name?: string;
}

const BLOCK = 512;

/** Why a path from an archive is unsafe to use under a directory, or undefined when it is fine. */
export function findUnsafePath(path: string): string | undefined {
  if (path === "") return "it is empty";
  if (path.includes("\0")) return "it contains a NUL byte";
  if (path.startsWith("/")) return "it is absolute";
  if (path.split("/").includes("..")) return "it has a '..' component";
  return undefined;
}

/** The entries of a tar stream, in order. Stop iterating at any time. */
export async function* readTar(
  input: ByteChunks,
  options: ReadTarOptions = {},
): AsyncGenerator<TarEntry, void, undefined> {
  const limits = { ...DEFAULT_TAR_LIMITS, ...options.limits };
  const name = options.name ?? "tar archive";
  const invalid: (message: string) => never = (message) => {
    throw debianError("ARCHIVE_INVALID", `${name}: ${message}`);
  };
  const tooLarge: (message: string, details: Record<string, unknown>) => never = (message, details) => {
    throw debianError("ARCHIVE_TOO_LARGE", `${name}: ${message}`, details);
  };

  const iterator = toAsyncIterator(input);
  const reader = new BlockReader(iterator, () => invalid("truncated: the archive ends inside an entry"));
  let pax: PaxFields = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  let entries = 0;
  let total = 0;

  try {
    for (;;) {
      const header = await reader.read(BLOCK, true);
      if (header === undefined || isZeroBlock(header)) {
        // End of archive (two zero blocks, or one, or none: all are seen in the wild).
        if (longName !== undefined || longLink !== undefined || Object.keys(pax).length > 0) {
          invalid("the archive ends after an extended header, without its entry");
        }
        return;
      }
      verifyChecksum(header, invalid);
      const typeflag = String.fromCharCode(header[156] ?? 0);
      const declaredSize = readNumber(header, 124, 12, "size", invalid);

      if (typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K") {
        if (declaredSize > limits.maxExtendedHeaderSize) {
          tooLarge(
            `an extended header of ${declaredSize} bytes is over the limit of ${limits.maxExtendedHeaderSize}`,
            {
              limit: limits.maxExtendedHeaderSize,
            },
          );
        }
        const data = (await reader.read(declaredSize)) ?? Buffer.alloc(0);
        await reader.skip(padding(declaredSize));
        if (typeflag === "x") pax = parsePax(data, pax, invalid);
        else if (typeflag === "L") longName = readLongName(data, invalid);
        else if (typeflag === "K") longLink = readLongName(data, invalid);
        // "g" (global pax header): nothing in it changes how we list entries.
        continue;
      }

      const type = entryType(typeflag);
      if (type === undefined) invalid(`unsupported entry type ${quote(typeflag)}`);

      const magic = header.toString("latin1", 257, 263);
      const ustarName = cString(header, 0, 100);
      const prefix = magic === "ustar\0" ? cString(header, 345, 155) : "";
      const path = pax.path ?? longName ?? (prefix ? `${prefix}/${ustarName}` : ustarName);
      const rawLink = pax.linkpath ?? longLink ?? cString(header, 157, 100);
      const size = pax.size !== undefined ? paxNumber(pax.size, "size", invalid) : declaredSize;
      const entry: TarEntry = {
        path,
        type,
        size: type === "file" ? size : 0,
        mode: readNumber(header, 100, 8, "mode", invalid) & 0o7777,
        uid:
          pax.uid !== undefined
            ? paxNumber(pax.uid, "uid", invalid)
            : readNumber(header, 108, 8, "uid", invalid),
        gid:
          pax.gid !== undefined
            ? paxNumber(pax.gid, "gid", invalid)
            : readNumber(header, 116, 8, "gid", invalid),
        uname: pax.uname ?? cString(header, 265, 32),
        gname: pax.gname ?? cString(header, 297, 32),
        mtime:
          pax.mtime !== undefined
            ? Math.floor(paxNumber(pax.mtime.split(".")[0] ?? "", "mtime", invalid))
            : readNumber(header, 136, 12, "mtime", invalid),
      };
      if (entry.type === "symlink" || entry.type === "hardlink") entry.linkTarget = rawLink;
      pax = {};
      longName = undefined;
      longLink = undefined;

      const unsafe = findUnsafePath(path);
      if (unsafe !== undefined) {
        throw debianError("ARCHIVE_UNSAFE", `${name}: refused entry ${quote(path)}: ${unsafe}`, { path });
      }
      if (path.length > limits.maxPathLength) {
        tooLarge(`a path of ${path.length} characters is over the limit of ${limits.maxPathLength}`, {
          limit: limits.maxPathLength,
        });
      }
      if (entry.type === "hardlink") {
        const why = findUnsafePath(rawLink);
        if (why !== undefined) {
          throw debianError(
            "ARCHIVE_UNSAFE",
            `${name}: refused hard link ${quote(path)} to ${quote(rawLink)}: ${why}`,
            {
              path,
            },
          );
        }
      }
      if (entry.type === "symlink" && rawLink.includes("\0")) {
        throw debianError(
          "ARCHIVE_UNSAFE",
          `${name}: refused symlink ${quote(path)}: its target contains a NUL byte`,
          {
            path,
          },
        );
      }

      entries++;
      if (entries > limits.maxEntries) {
        tooLarge(`more than ${limits.maxEntries} entries`, { limit: limits.maxEntries });
      }
      if (entry.size > limits.maxEntrySize) {
        tooLarge(`entry ${quote(path)} is ${entry.size} bytes, over the limit of ${limits.maxEntrySize}`, {
          path,
          size: entry.size,
          limit: limits.maxEntrySize,
        });
      }
      total += entry.size;
      if (total > limits.maxTotalSize) {
        tooLarge(`the entries add up to more than ${limits.maxTotalSize} bytes`, {
          limit: limits.maxTotalSize,
        });
      }

      if (entry.type === "file" && options.readContent?.(entry) === true) {
        if (entry.size > limits.maxContentSize) {
          tooLarge(`${quote(path)} is ${entry.size} bytes, over the limit of ${limits.maxContentSize}`, {
            path,
            size: entry.size,
            limit: limits.maxContentSize,
          });
        }
        entry.content = (await reader.read(entry.size)) ?? Buffer.alloc(0);
        await reader.skip(padding(entry.size));
      } else {
        await reader.skip(entry.type === "file" ? entry.size + padding(entry.size) : 0);
      }
      yield entry;
    }
  } finally {
    await iterator.return?.();
  }
}

/** Closing the returned iterator closes `input`'s, so an abandoned read stops its source. */
function toAsyncIterator(input: ByteChunks): AsyncIterator<Uint8Array> {
  if (Symbol.asyncIterator in input) return input[Symbol.asyncIterator]();
  const sync = input[Symbol.iterator]();
  return {
    next: () => Promise.resolve(sync.next()),
    return: () => Promise.resolve(sync.return?.() ?? { done: true, value: undefined }),
  };
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function isZeroBlock(block: Buffer): boolean {
  for (const byte of block) if (byte !== 0) return false;
  return true;
}

function entryType(flag: string): TarEntryType | undefined {
  switch (flag) {
    case "0":
    case "\0":
    case "7": // contiguous file: a regular file everywhere that matters
      return "file";
    case "1":
      return "hardlink";
    case "2":
      return "symlink";
    case "3":
      return "character-device";
    case "4":
      return "block-device";
    case "5":
      return "directory";
    case "6":
      return "fifo";
    default:
      return undefined;
  }
}

function verifyChecksum(header: Buffer, invalid: (m: string) => never): void {
  const stored = header
    .toString("latin1", 148, 156)
    .replace(/[\0 ]+$/, "")
    .trim();
  if (!/^[0-7]+$/.test(stored)) invalid("not a tar archive (bad header checksum field)");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  const want = parseInt(stored, 8);
  if (want !== unsigned && want !== signed) invalid("corrupt header (checksum mismatch)");
}

/** A NUL-terminated header field. */
function cString(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString("utf8", start, end >= 0 && end < start + length ? end : start + length);
}

/** An octal number, or a base-256 one (first byte 0x80) as GNU tar writes large values. */
function readNumber(
  buf: Buffer,
  start: number,
  length: number,
  what: string,
  invalid: (m: string) => never,
): number {
  const first = buf[start] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) invalid(`negative ${what} field`);
    let value = first & 0x7f;
    for (let i = start + 1; i < start + length; i++) {
      value = value * 256 + (buf[i] ?? 0);
      if (value > Number.MAX_SAFE_INTEGER) invalid(`${what} field out of range`);
    }
    return value;
  }
  const text = buf
    .toString("latin1", start, start + length)
    .replace(/\0.*$/s, "")
    .trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) invalid(`bad ${what} field ${quote(text)}`);
  return parseInt(text, 8);
}

function paxNumber(text: string, what: string, invalid: (m: string) => never): number {
  if (!/^[0-9]{1,16}$/.test(text)) invalid(`bad pax ${what} ${quote(text)}`);
  const value = Number(text);
  if (value > Number.MAX_SAFE_INTEGER) invalid(`pax ${what} out of range`);
  return value;
}

/** A GNU long name: the payload up to its NUL terminator; anything but NULs after it is refused. */
function readLongName(data: Buffer, invalid: (m: string) => never): string {
  const end = data.indexOf(0);
  if (end < 0) return data.toString("utf8");
  for (let i = end; i < data.length; i++) {
    if (data[i] !== 0) {
      throw debianError(
        "ARCHIVE_UNSAFE",
        `a GNU long name contains a NUL byte: ${quote(data.toString("utf8", 0, end))}`,
      );
    }
  }
  if (end === 0) invalid("empty GNU long name");
  return data.toString("utf8", 0, end);
}

/** The pax keys that change how an entry is listed; others (comments, atime, xattrs…) are dropped. */
const PAX_KEYS = ["path", "linkpath", "size", "uid", "gid", "mtime", "uname", "gname"] as const;
type PaxFields = Partial<Record<(typeof PAX_KEYS)[number], string>>;

function isPaxKey(key: string): key is (typeof PAX_KEYS)[number] {
  return (PAX_KEYS as readonly string[]).includes(key);
}

/** pax extended header records, `LENGTH key=value\n` with LENGTH counting the whole record, over `base`. */
function parsePax(data: Buffer, base: PaxFields, invalid: (m: string) => never): PaxFields {
  const out: PaxFields = { ...base };
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, pos);
    const lengthText = space > pos ? data.toString("latin1", pos, space) : "";
    if (!/^[0-9]{1,8}$/.test(lengthText)) invalid("corrupt pax header (bad record length)");
    const length = Number(lengthText);
    const end = pos + length;
    if (length <= lengthText.length + 1 || end > data.length || data[end - 1] !== 0x0a) {
      invalid("corrupt pax header (record overruns)");
    }
    const record = data.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) invalid("corrupt pax header (record without key=value)");
    const key = record.toString("utf8", 0, eq);
    if (isPaxKey(key)) {
      const value = record.toString("utf8", eq + 1);
      // An empty value removes the key, as POSIX says.
      if (value === "") delete out[key];
      else out[key] = value;
    }
    pos = end;
  }
  return out;
}

/** Reads exact byte counts from an async iterator of chunks, holding only what it must. */
class BlockReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;

  constructor(
    private readonly iterator: AsyncIterator<Uint8Array>,
    private readonly truncated: () => never,
  ) {}

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done === true) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }

  /** Exactly n bytes; at a clean end (no bytes at all) undefined when `endOk`, else an error. */
  async read(n: number, endOk = false): Promise<Buffer | undefined> {
    while (this.buffered < n) {
      if (!(await this.pull())) {
        if (this.buffered === 0 && (endOk || n === 0)) return undefined;
        return this.truncated();
      }
    }
    const head = this.chunks[0];
    if (head !== undefined && head.length >= n) {
      this.chunks[0] = head.subarray(n);
      if (this.chunks[0].length === 0) this.chunks.shift();
      this.buffered -= n;
      return head.subarray(0, n);
    }
    // Join only as many chunks as the read needs.
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const chunk = this.chunks.shift();
      if (chunk === undefined) break;
      if (got + chunk.length <= n) {
        parts.push(chunk);
        got += chunk.length;
      } else {
        parts.push(chunk.subarray(0, n - got));
        this.chunks.unshift(chunk.subarray(n - got));
        got = n;
      }
    }
    this.buffered -= n;
    return Buffer.concat(parts, n);
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.pull())) this.truncated();
      const head = this.chunks[0];
      if (head === undefined) continue;
      if (head.length <= left) {
        left -= head.length;
        this.buffered -= head.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = head.subarray(left);
        this.buffered -= left;
        left = 0;
      }
    }
  }
}
