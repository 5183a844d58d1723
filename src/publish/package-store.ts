import { createHash } from "node:crypto";
import path from "node:path";
import type { Kysely, Selectable } from "kysely";
import type { BlobStore, DeferredSync } from "../artifacts/blob-store.js";
import type { Database, PackagesTable } from "../db/schema.js";
import { readFile, stat } from "node:fs/promises";
import { WHOLE_FILE_MAX } from "../debian/byte-source.js";
import { readDebControl } from "../debian/deb-file.js";
import { parseDsc } from "../debian/dsc-file.js";
import { getField, parseParagraph } from "../debian/deb822.js";
import { hashFile } from "../debian/hash-file.js";
import { hashBytesNoSha512 } from "../debian/index-writers.js";
import type { QueryTarget } from "../debian/package-query.js";
import { KilnError } from "../errors/catalogue.js";

/** One file of a package, with the checksums Packages and Sources list. */
export interface PackageFile {
  name: string;
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
}

/** A package as the repository code handles it: a row with its files decoded. */
export interface PackageRecord {
  id: number;
  key: string;
  name: string;
  version: string;
  arch: string;
  kind: "deb" | "udeb" | "dsc";
  source: string;
  control: string;
  files: PackageFile[];
}

/** What importing a file yields, before it has a row. */
export type PackageInput = Omit<PackageRecord, "id">;

export const PACKAGE_EXTENSIONS = [".deb", ".udeb", ".dsc"] as const;

/**
 * Aptly's package key, `P<arch> <name> <version> <files hash>`: two uploads of the same
 * name, version and arch with different content get different keys.
 */
export function packageKey(
  arch: string,
  name: string,
  version: string,
  files: readonly PackageFile[],
): string {
  const h = createHash("sha256");
  for (const f of [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    h.update(`${f.name} ${f.size} ${f.sha256}\n`);
  }
  return `P${arch} ${name} ${version} ${h.digest("hex").slice(0, 16)}`;
}

/** The source package name a binary's `Source` field names (`Source: foo (1.2)` → foo). */
export function sourceNameOf(sourceField: string | undefined, fallback: string): string {
  const name = sourceField?.trim().split(/\s+/)[0];
  return name === undefined || name === "" ? fallback : name;
}

export function isPackageFileName(name: string): boolean {
  return PACKAGE_EXTENSIONS.some((ext) => name.endsWith(ext));
}

/**
 * A .deb or .udeb read and checked, named `name` (its file may be a blob under another name).
 * Nothing is stored; a bad file throws its Debian error code (DEB_INVALID, ARCHIVE_UNSAFE, …).
 */
export async function readBinaryPackage(
  file: string,
  name: string,
  kind: "deb" | "udeb",
): Promise<PackageInput> {
  // A small package is read once, for its control data and its checksums both.
  const whole = (await stat(file)).size <= WHOLE_FILE_MAX ? await readFile(file) : undefined;
  const deb = await readDebControl(whole ?? file, { name });
  const files: PackageFile[] = [{ name, ...(whole ? hashBytesNoSha512(whole) : await hashFile(file)) }];
  return {
    key: packageKey(deb.architecture, deb.package, deb.version, files),
    name: deb.package,
    version: deb.version,
    arch: deb.architecture,
    kind,
    source: sourceNameOf(getField(deb.control, "Source"), deb.package),
    control: withNewline(deb.controlText),
    files,
  };
}

/**
 * A .dsc and the files it lists, read and checked against every checksum it gives; `locate`
 * says where a listed file is (undefined: it is missing). Nothing is stored.
 */
export async function readSourcePackage(
  dscFile: string,
  dscName: string,
  locate: (name: string) => string | undefined,
): Promise<PackageInput> {
  const dsc = parseDsc(await readFile(dscFile, "utf8"), dscName);
  const files: PackageFile[] = [{ name: dscName, ...(await hashFile(dscFile)) }];
  for (const ref of dsc.files) {
    const missing = () =>
      new KilnError("DSC_FILE_MISSING", `${dscName} lists ${ref.name}, which did not come with it`, {
        dsc: dscName,
        file: ref.name,
      });
    const where = locate(ref.name);
    if (where === undefined) throw missing();
    const h = await hashFile(where).catch((err: NodeJS.ErrnoException) => {
      throw err.code === "ENOENT" ? missing() : err;
    });
    const mismatch =
      h.size !== ref.size ||
      (ref.sha256 !== undefined && ref.sha256 !== h.sha256) ||
      (ref.sha1 !== undefined && ref.sha1 !== h.sha1) ||
      (ref.md5 !== undefined && ref.md5 !== h.md5);
    if (mismatch) {
      throw new KilnError(
        "CHECKSUM_MISMATCH",
        `${ref.name} does not match the size or checksums ${dscName} lists`,
        {
          dsc: dscName,
          file: ref.name,
        },
      );
    }
    files.push({ name: ref.name, ...h });
  }
  return {
    key: packageKey("source", dsc.source, dsc.version, files),
    name: dsc.source,
    version: dsc.version,
    arch: "source",
    kind: "dsc",
    source: dsc.source,
    control: withNewline(dsc.text),
    files,
  };
}

const withNewline = (text: string) => (text.endsWith("\n") ? text : `${text}\n`);

/**
 * Reads a .deb or .udeb and stores it in the blob store, by hard link where it can: the files
 * come from upload areas, which never write a complete file again.
 */
export async function importBinaryFile(
  blobs: BlobStore,
  file: string,
  opts: { deferSync?: DeferredSync } = {},
): Promise<PackageInput> {
  const base = path.basename(file);
  const kind = base.endsWith(".udeb") ? "udeb" : "deb";
  // Read once, from the inode linked into the store (see adoptInspected).
  const { inspected } = await blobs.adoptInspected(
    file,
    async (linked) => {
      const input = await readBinaryPackage(linked, base, kind);
      const main = mainFile(input);
      return { sha256: main.sha256, size: main.size, input };
    },
    opts,
  );
  return inspected.input;
}

/** Reads a .dsc with the files it lists from the same directory and stores them all (as above). */
export async function importSourceFile(
  blobs: BlobStore,
  file: string,
  opts: { deferSync?: DeferredSync } = {},
): Promise<PackageInput> {
  const dir = path.dirname(file);
  const input = await readSourcePackage(file, path.basename(file), (name) => path.join(dir, name));
  for (const [i, f] of input.files.entries()) {
    await blobs.adoptFile(i === 0 ? file : path.join(dir, f.name), { expectSha256: f.sha256, ...opts });
  }
  return input;
}

/**
 * Reads a package file of any kind (.deb, .udeb, .dsc with its files) and stores it; with
 * `deferSync`, durable once that batch is flushed.
 */
export function importPackageFile(
  blobs: BlobStore,
  file: string,
  opts: { deferSync?: DeferredSync } = {},
): Promise<PackageInput> {
  return file.endsWith(".dsc") ? importSourceFile(blobs, file, opts) : importBinaryFile(blobs, file, opts);
}

/**
 * Records made from rows, by id and key: a row never changes, and the key (which names the
 * content) guards against an id reused after a row was deleted, or another database's row.
 * Publishing a large repo then reads ids and keys, not megabytes of control text.
 */
const recordCache = new Map<string, PackageRecord>();
const RECORD_CACHE_MAX = 250_000;

export function rememberPackageRecords(records: readonly PackageRecord[]): void {
  for (const r of records) {
    if (recordCache.size >= RECORD_CACHE_MAX) recordCache.clear();
    recordCache.set(`${r.id} ${r.key}`, r);
  }
}

/** The record of the row with this id and key, if this process has made it. */
export function knownPackageRecord(id: number, key: string): PackageRecord | undefined {
  return recordCache.get(`${id} ${key}`);
}

export function toPackageRecord(row: Selectable<PackagesTable>): PackageRecord {
  return {
    id: row.id,
    key: row.key,
    name: row.name,
    version: row.version,
    arch: row.arch,
    kind: row.kind as PackageRecord["kind"],
    source: row.source,
    control: row.control,
    files: JSON.parse(row.files) as PackageFile[],
  };
}

/** The row for `input`'s key, made when missing (the same content is stored once). */
export async function upsertPackage(
  trx: Kysely<Database>,
  input: PackageInput,
  now: number,
): Promise<PackageRecord> {
  const existing = await trx
    .selectFrom("packages")
    .selectAll()
    .where("key", "=", input.key)
    .executeTakeFirst();
  if (existing) return toPackageRecord(existing);
  const row = await trx
    .insertInto("packages")
    .values({
      key: input.key,
      name: input.name,
      version: input.version,
      arch: input.arch,
      kind: input.kind,
      source: input.source,
      sha256: mainFile(input).sha256,
      control: input.control,
      files: JSON.stringify(input.files),
      created_at: now,
    })
    .onConflict((oc) => oc.column("key").doNothing())
    .returningAll()
    .executeTakeFirst();
  if (row) return toPackageRecord(row);
  // Another writer added it since the look above (two tag repos of one build made side by side).
  return toPackageRecord(
    await trx.selectFrom("packages").selectAll().where("key", "=", input.key).executeTakeFirstOrThrow(),
  );
}

/**
 * upsertPackage() for many at once, a few hundred rows per statement; the records come back in
 * the order of `inputs`.
 */
export async function upsertPackages(
  trx: Kysely<Database>,
  inputs: readonly PackageInput[],
  now: number,
): Promise<PackageRecord[]> {
  const byKey = new Map<string, PackageRecord>();
  const keys = [...new Set(inputs.map((i) => i.key))];
  for (let i = 0; i < keys.length; i += 500) {
    const rows = await trx
      .selectFrom("packages")
      .selectAll()
      .where("key", "in", keys.slice(i, i + 500))
      .execute();
    for (const row of rows) byKey.set(row.key, toPackageRecord(row));
  }
  const missing = new Map<string, PackageInput>();
  for (const input of inputs) {
    if (!byKey.has(input.key) && !missing.has(input.key)) missing.set(input.key, input);
  }
  // 10 columns a row: 50 rows stay well under SQLite's limit on bound parameters.
  const toInsert = [...missing.values()];
  for (let i = 0; i < toInsert.length; i += 50) {
    const rows = await trx
      .insertInto("packages")
      .values(
        toInsert.slice(i, i + 50).map((input) => ({
          key: input.key,
          name: input.name,
          version: input.version,
          arch: input.arch,
          kind: input.kind,
          source: input.source,
          sha256: mainFile(input).sha256,
          control: input.control,
          files: JSON.stringify(input.files),
          created_at: now,
        })),
      )
      .returningAll()
      .execute();
    for (const row of rows) byKey.set(row.key, toPackageRecord(row));
  }
  const records = inputs.map((input) => byKey.get(input.key) as PackageRecord);
  rememberPackageRecords(records);
  return records;
}

export async function getPackageByKey(db: Kysely<Database>, key: string): Promise<PackageRecord> {
  const row = await db.selectFrom("packages").selectAll().where("key", "=", key).executeTakeFirst();
  if (!row) throw new KilnError("PACKAGE_NOT_FOUND", `no package with key "${key}"`, { key });
  return toPackageRecord(row);
}

/** Lets the package query language look at a record; the control text is parsed on demand. */
export function queryTargetOf(pkg: PackageRecord): QueryTarget {
  let paragraph: ReturnType<typeof parseParagraph> | undefined;
  return {
    name: pkg.name,
    version: pkg.version,
    architecture: pkg.arch,
    packageType: pkg.kind === "dsc" ? "source" : pkg.kind,
    source: pkg.source,
    field(name: string) {
      paragraph ??= parseParagraph(pkg.control);
      return getField(paragraph, name);
    },
  };
}

/** The pool-relative main file (.deb or .dsc) of a package. */
export function mainFile(pkg: Pick<PackageRecord, "files" | "key">): PackageFile {
  const file = pkg.files[0];
  if (!file) throw new KilnError("INTERNAL", `package ${pkg.key} has no files`);
  return file;
}
