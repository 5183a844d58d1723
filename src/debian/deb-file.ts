/**
 * Reads a binary package (.deb, deb(5)) the way dpkg-deb does, without extracting it: the
 * `debian-binary` version, the control file from control.tar[.gz|.xz|.zst], and optionally the
 * listing of data.tar. Everything is read with limits; nothing is written to disk.
 */
import path from "node:path";
import { KilnError } from "../errors/catalogue.js";
import { listArMembers, readArMember, streamArMember, type ArMember } from "./ar.js";
import { bufferSource, openFileSource, type ByteSource } from "./byte-source.js";
import { getField, parseParagraph, requireField, type Paragraph } from "./deb822.js";
import { debianError, debianErrorCode, quote } from "./debian-error.js";
import {
  compressionFromExtension,
  decompress,
  decompressSmall,
  SMALL_INPUT_MAX,
  type Compression,
} from "./decompress.js";
import { readTar, type TarEntry } from "./tar.js";
import { assertValidArchitecture, assertValidPackageName, parseVersion } from "./version.js";

export interface DebLimits {
  maxMembers: number;
  /** control.tar once decompressed. */
  maxControlTarSize: number;
  maxControlEntries: number;
  /** The control file itself. */
  maxControlFileSize: number;
  /** data.tar once decompressed (read only when listing files). */
  maxDataTarSize: number;
  maxDataEntries: number;
  /** One file in data.tar. */
  maxDataEntrySize: number;
}

export const DEFAULT_DEB_LIMITS: Readonly<DebLimits> = {
  maxMembers: 16,
  maxControlTarSize: 64 * 1024 * 1024,
  maxControlEntries: 1000,
  maxControlFileSize: 1024 * 1024,
  maxDataTarSize: 16 * 1024 ** 3,
  maxDataEntries: 1_000_000,
  maxDataEntrySize: 8 * 1024 ** 3,
};

export interface ReadDebOptions {
  limits?: Partial<DebLimits>;
  /** Also list data.tar (reads and decompresses the whole member). */
  listFiles?: boolean;
  /** Names the package in error messages; defaults to the file's base name. */
  name?: string;
}

export interface DebControl {
  /** The control file's one paragraph; look fields up with getField(). */
  control: Paragraph;
  controlText: string;
  package: string;
  version: string;
  architecture: string;
  /** The `debian-binary` version, e.g. "2.0". */
  formatVersion: string;
  controlCompression: Compression;
  dataCompression: Compression;
  /** Paths in control.tar: ./control, ./md5sums, ./postinst, … */
  controlMembers: string[];
  /** data.tar entries, when `listFiles` was set. */
  files?: TarEntry[];
}

const CONTROL_MEMBER = "control.tar";
const DATA_MEMBER = "data.tar";
const CONTROL_COMPRESSIONS: readonly Compression[] = ["none", "gzip", "xz", "zstd"];

/** Reads and checks a .deb from a file path or a buffer. */
export async function readDebControl(
  input: string | Buffer,
  options: ReadDebOptions = {},
): Promise<DebControl> {
  const limits = { ...DEFAULT_DEB_LIMITS, ...options.limits };
  const name = options.name ?? (typeof input === "string" ? path.basename(input) : "package");
  const source = typeof input === "string" ? await openFileSource(input) : bufferSource(input);
  try {
    return await readFrom(source, name, limits, options.listFiles ?? false);
  } finally {
    await source.close();
  }
}

async function readFrom(
  source: ByteSource,
  name: string,
  limits: DebLimits,
  listFiles: boolean,
): Promise<DebControl> {
  const invalid: (message: string, details?: Record<string, unknown>) => never = (message, details) => {
    throw debianError("DEB_INVALID", `${name} is not a valid Debian package: ${message}`, details);
  };

  let members: ArMember[];
  try {
    members = await listArMembers(source, { maxMembers: limits.maxMembers, name });
  } catch (err) {
    if (debianErrorCode(err) !== "ARCHIVE_INVALID") throw err;
    return invalid((err as Error).message.replace(`${name}: `, ""));
  }

  const [first, ...rest] = members;
  if (first?.name !== "debian-binary") {
    return invalid(
      first === undefined
        ? "the archive is empty"
        : `the first member is ${quote(first.name)}, not "debian-binary"`,
    );
  }
  const binary = (await readArMember(source, first, 256, name)).toString("latin1");
  const formatVersion = binary.split("\n")[0] ?? "";
  if (!/^2\.[0-9]+$/.test(formatVersion)) {
    invalid(`debian-binary says ${quote(formatVersion)}; only format 2.x is supported`);
  }

  // After debian-binary: control.tar*, then data.tar*; members starting with "_" may sit
  // anywhere and are skipped, as dpkg-deb does; anything after data.tar is ignored.
  let control: { member: ArMember; compression: Compression } | undefined;
  let data: { member: ArMember; compression: Compression } | undefined;
  for (const member of rest) {
    if (member.name.startsWith("_")) continue;
    if (control === undefined) {
      if (!member.name.startsWith(CONTROL_MEMBER)) {
        invalid(`member ${quote(member.name)} comes before ${CONTROL_MEMBER}`);
      }
      const compression = compressionFromExtension(member.name.slice(CONTROL_MEMBER.length));
      if (compression === undefined || !CONTROL_COMPRESSIONS.includes(compression)) {
        return invalid(`unknown compression in member ${quote(member.name)}`);
      }
      control = { member, compression };
    } else {
      if (!member.name.startsWith(DATA_MEMBER)) {
        invalid(
          member.name.startsWith(CONTROL_MEMBER)
            ? "it has two control members"
            : `member ${quote(member.name)} comes where ${DATA_MEMBER} should`,
        );
      }
      const compression = compressionFromExtension(member.name.slice(DATA_MEMBER.length));
      if (compression === undefined) return invalid(`unknown compression in member ${quote(member.name)}`);
      data = { member, compression };
      break;
    }
  }
  if (control === undefined) return invalid(`it has no ${CONTROL_MEMBER} member`);
  if (data === undefined) return invalid(`it has no ${DATA_MEMBER} member`);

  const controlName = `${name}: ${control.member.name}`;
  let controlFile: Buffer | undefined;
  const controlMembers: string[] = [];
  const inflate = { maxBytes: limits.maxControlTarSize, name: controlName };
  // The usual control member is a few kilobytes of xz or gzip: decompressed at once when it is.
  const small =
    control.member.size <= SMALL_INPUT_MAX && control.compression !== "none"
      ? decompressSmall(
          await readArMember(source, control.member, control.member.size, name),
          control.compression,
          inflate,
        )
      : undefined;
  const controlTar = readTar(
    small !== undefined
      ? [small]
      : decompress(streamArMember(source, control.member), control.compression, inflate),
    {
      name: controlName,
      limits: {
        maxEntries: limits.maxControlEntries,
        maxEntrySize: limits.maxControlTarSize,
        maxTotalSize: limits.maxControlTarSize,
        maxContentSize: limits.maxControlFileSize,
      },
      readContent: (entry) => isControlPath(entry.path),
    },
  );
  for await (const entry of controlTar) {
    controlMembers.push(entry.path);
    if (!isControlPath(entry.path)) continue;
    if (entry.type !== "file")
      invalid(`${control.member.name}: ${quote(entry.path)} is a ${entry.type}, not a file`);
    if (controlFile !== undefined) invalid(`${control.member.name} holds the control file twice`);
    controlFile = entry.content;
  }
  if (controlFile === undefined) return invalid(`${control.member.name} has no ./control file`);

  let controlText: string;
  try {
    controlText = new TextDecoder("utf-8", { fatal: true }).decode(controlFile);
  } catch {
    return invalid("the control file is not valid UTF-8");
  }
  const where = `${name}: control`;
  const paragraph = parseParagraph(controlText, {
    source: where,
    comments: false,
    limits: { maxBytes: limits.maxControlFileSize },
  });
  const pkg = requireField(paragraph, "Package", where);
  const version = requireField(paragraph, "Version", where);
  const architecture = requireField(paragraph, "Architecture", where);
  withField(where, "Package", () => assertValidPackageName(pkg));
  withField(where, "Version", () => parseVersion(version));
  withField(where, "Architecture", () => assertValidArchitecture(architecture));
  const sourceField = getField(paragraph, "Source");
  if (sourceField !== undefined) {
    // "Source: name (version)" when the binary version differs from the source's.
    const src = /^(\S+)(?:\s+\((\S+)\))?$/.exec(sourceField);
    if (src === null) return invalid(`the Source field ${quote(sourceField)} is malformed`);
    const [, srcName = "", srcVersion] = src;
    withField(where, "Source", () => {
      assertValidPackageName(srcName, "source package name");
      if (srcVersion !== undefined) parseVersion(srcVersion);
    });
  }

  const result: DebControl = {
    control: paragraph,
    controlText,
    package: pkg,
    version,
    architecture,
    formatVersion,
    controlCompression: control.compression,
    dataCompression: data.compression,
    controlMembers,
  };

  if (listFiles) {
    const dataName = `${name}: ${data.member.name}`;
    const files: TarEntry[] = [];
    const dataTar = readTar(
      decompress(streamArMember(source, data.member), data.compression, {
        maxBytes: limits.maxDataTarSize,
        name: dataName,
      }),
      {
        name: dataName,
        limits: {
          maxEntries: limits.maxDataEntries,
          maxEntrySize: limits.maxDataEntrySize,
          maxTotalSize: limits.maxDataTarSize,
        },
      },
    );
    for await (const entry of dataTar) files.push(entry);
    result.files = files;
  }
  return result;
}

function isControlPath(p: string): boolean {
  return p === "./control" || p === "control";
}

/** Runs a field check; its error names the package and the field. */
function withField(where: string, field: string, check: () => unknown): void {
  try {
    check();
  } catch (err) {
    if (err instanceof KilnError)
      throw new KilnError(err.code, `${where}: ${err.message}`, { ...err.details, field });
    throw err;
  }
}
