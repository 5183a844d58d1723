/**
 * The ar archive format that wraps a .deb (deb(5)): the magic `!<arch>\n`, then members, each a
 * 60-byte header (name, mtime, uid, gid, octal mode, decimal size, "`\n") followed by the data,
 * padded with "\n" to an even offset. Only the index is read here; members are read on demand.
 */
import type { ByteSource } from "./byte-source.js";
import { debianError, quote } from "./debian-error.js";

export const AR_MAGIC = "!<arch>\n";
const HEADER_SIZE = 60;

export interface ArMember {
  /** Trailing spaces and the GNU `/` terminator removed. */
  name: string;
  /** Where the member's data starts in the archive. */
  offset: number;
  size: number;
  mtime: number;
  uid: number;
  gid: number;
  mode: number;
}

export interface ArOptions {
  maxMembers?: number;
  /** Names the archive in error messages. */
  name?: string;
}

/** The members of an ar archive, in order. Refuses a wrong magic, bad headers and truncation. */
export async function listArMembers(source: ByteSource, options: ArOptions = {}): Promise<ArMember[]> {
  const name = options.name ?? "archive";
  const maxMembers = options.maxMembers ?? 64;
  const fail = (message: string, details?: Record<string, unknown>): never => {
    throw debianError("ARCHIVE_INVALID", `${name}: ${message}`, details);
  };

  const magic = await source.read(0, AR_MAGIC.length);
  if (magic.toString("latin1") !== AR_MAGIC) {
    return fail(
      source.size < AR_MAGIC.length
        ? `too short (${source.size} bytes) to be an ar archive`
        : `not an ar archive (it does not start with "!<arch>\\n")`,
    );
  }

  const members: ArMember[] = [];
  let pos = AR_MAGIC.length;
  while (pos < source.size) {
    if (members.length >= maxMembers) fail(`more than ${maxMembers} members`);
    const header = await source.read(pos, HEADER_SIZE);
    if (header.length < HEADER_SIZE) {
      fail(`truncated member header at offset ${pos} (${header.length} of ${HEADER_SIZE} bytes)`, {
        offset: pos,
      });
    }
    if (header.toString("latin1", 58, 60) !== "`\n") {
      fail(`bad member header at offset ${pos} (no "\`\\n" terminator)`, { offset: pos });
    }
    const memberName = header.toString("latin1", 0, 16).replace(/ +$/, "").replace(/\/$/, "");
    const field = (start: number, end: number, what: string, radix: 8 | 10): number => {
      const text = header.toString("latin1", start, end).trim();
      if (text === "") return 0;
      if (!(radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/).test(text)) {
        fail(`member ${quote(memberName)} at offset ${pos} has a bad ${what} field ${quote(text)}`, {
          offset: pos,
        });
      }
      return parseInt(text, radix);
    };
    const sizeText = header.toString("latin1", 48, 58).trim();
    if (!/^[0-9]+$/.test(sizeText)) {
      fail(`member ${quote(memberName)} at offset ${pos} has a bad size field ${quote(sizeText)}`, {
        offset: pos,
      });
    }
    const size = Number(sizeText);
    const offset = pos + HEADER_SIZE;
    if (offset + size > source.size) {
      fail(
        `member ${quote(memberName)} is truncated: it declares ${size} bytes but only ${source.size - offset} remain`,
        { member: memberName, offset: pos },
      );
    }
    members.push({
      name: memberName,
      offset,
      size,
      mtime: field(16, 28, "mtime", 10),
      uid: field(28, 34, "uid", 10),
      gid: field(34, 40, "gid", 10),
      mode: field(40, 48, "mode", 8),
    });
    // Members start at even offsets; a missing pad byte after the last member is tolerated.
    pos = offset + size + (size % 2);
  }
  return members;
}

/** A member's whole data; refuses one over `maxSize` bytes before reading it. */
export async function readArMember(
  source: ByteSource,
  member: ArMember,
  maxSize: number,
  name = "archive",
): Promise<Buffer> {
  if (member.size > maxSize) {
    throw debianError(
      "ARCHIVE_TOO_LARGE",
      `${name}: member ${quote(member.name)} is ${member.size} bytes, over the limit of ${maxSize}`,
      { member: member.name, size: member.size, limit: maxSize },
    );
  }
  return source.read(member.offset, member.size);
}

export function streamArMember(source: ByteSource, member: ArMember): AsyncIterable<Buffer> {
  return source.stream(member.offset, member.size);
}
