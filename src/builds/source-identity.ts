import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { KilnError } from "../errors/catalogue.js";
import { parseLatestChangelogEntry } from "../debian/changelog.js";
import { getField, parseParagraph } from "../debian/deb822.js";
import { decompress } from "../debian/decompress.js";
import { readTar } from "../debian/tar.js";
import { assertValidPackageName, parseVersion } from "../debian/version.js";

export interface SourceIdentity {
  source: string;
  version: string;
}

/** Limits for reading an uploaded source tarball before anything is stored. */
export const SOURCE_TAR_LIMITS = {
  maxEntries: 200_000,
  maxTotalSize: 8 * 1024 ** 3,
  maxContentSize: 4 * 1024 * 1024,
};

/**
 * Reads the name and version of a packed source directory from its debian/changelog, checking
 * every path in the archive on the way (absolute or `..` paths are refused: ARCHIVE_UNSAFE).
 */
export async function identifyTarball(file: string): Promise<SourceIdentity> {
  const chunks = decompress(createReadStream(file), "gzip", {
    maxBytes: SOURCE_TAR_LIMITS.maxTotalSize,
    name: "source tarball",
  });
  let changelog: Buffer | undefined;
  let hasControl = false;
  let hasDebian = false;
  for await (const entry of readTar(chunks, {
    name: "source tarball",
    limits: SOURCE_TAR_LIMITS,
    readContent: (e) => normalize(e.path) === "debian/changelog",
  })) {
    const p = normalize(entry.path);
    if (p === "debian" || p.startsWith("debian/")) hasDebian = true;
    if (p === "debian/control") hasControl = true;
    if (p === "debian/changelog" && entry.content) changelog = entry.content;
  }
  if (!hasDebian) {
    throw new KilnError(
      "SOURCE_INVALID",
      "the source has no debian/ directory at its top; point kiln build at the directory that contains debian/",
    );
  }
  if (!changelog) throw new KilnError("SOURCE_INVALID", "the source has no debian/changelog");
  if (!hasControl) throw new KilnError("SOURCE_INVALID", "the source has no debian/control");
  const entry = parseLatestChangelogEntry(changelog.toString("utf8"));
  return { source: entry.source, version: entry.version };
}

function normalize(p: string): string {
  return p.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
}

/** Name and version from a .dsc (clear-signed or not), validated against Debian's rules. */
export async function identifyDsc(
  file: string,
): Promise<SourceIdentity & { files: { name: string; sha256: string; size: number }[] }> {
  let text = await readFile(file, "utf8");
  const signed =
    /-----BEGIN PGP SIGNED MESSAGE-----\r?\n(?:[^\n]*\n)*?\r?\n([\s\S]*?)\r?\n-----BEGIN PGP SIGNATURE-----/.exec(
      text,
    );
  if (signed?.[1] !== undefined) text = signed[1];
  const para = parseParagraph(text, { source: ".dsc" });
  const source = getField(para, "Source");
  const version = getField(para, "Version");
  if (!source || !version) throw new KilnError("SOURCE_INVALID", "the .dsc has no Source or Version field");
  assertValidPackageName(source, "source");
  parseVersion(version);
  const files = (getField(para, "Checksums-Sha256") ?? "")
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((p) => p.length === 3)
    .map(([sha256, size, name]) => ({ sha256: sha256 ?? "", size: Number(size), name: name ?? "" }));
  if (files.length === 0) throw new KilnError("SOURCE_INVALID", "the .dsc lists no files (Checksums-Sha256)");
  return { source, version, files };
}
