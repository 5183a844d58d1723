import type { Kysely, Selectable } from "kysely";
import type { Database, SnapshotsTable } from "../db/schema.js";
import { compareVersions } from "../debian/version.js";
import { KilnError } from "../errors/catalogue.js";
import { toPackageRecord, type PackageRecord } from "./package-store.js";
import { assertRepoName, publicationsServing } from "./repo-store.js";

export type SnapshotRow = Selectable<SnapshotsTable>;

/** Where a snapshot's contents came from; snapshots never change after they are made. */
export type SnapshotOrigin =
  | { kind: "repo"; repo: string }
  | { kind: "tag"; tag: string; event: number }
  | { kind: "merge"; sources: string[]; latest: boolean }
  | { kind: "filter"; source: string; query: string }
  | { kind: "packages" };

export interface SnapshotJson {
  name: string;
  description: string;
  origin: SnapshotOrigin;
  packageCount?: number;
  createdAt: string;
}

export function toSnapshotJson(row: SnapshotRow, packageCount?: number): SnapshotJson {
  return {
    name: row.name,
    description: row.description,
    origin: JSON.parse(row.origin) as SnapshotOrigin,
    ...(packageCount === undefined ? {} : { packageCount }),
    createdAt: new Date(row.created_at).toISOString(),
  };
}

export async function getSnapshot(db: Kysely<Database>, name: string): Promise<SnapshotRow> {
  const row = await db.selectFrom("snapshots").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) {
    throw new KilnError("SNAPSHOT_NOT_FOUND", `no snapshot "${name}"; \`kiln snapshot list\` shows them`, {
      name,
    });
  }
  return row;
}

export async function listSnapshots(
  db: Kysely<Database>,
): Promise<(SnapshotRow & { package_count: number })[]> {
  const rows = await db
    .selectFrom("snapshots")
    .leftJoin("snapshot_packages", "snapshot_packages.snapshot_id", "snapshots.id")
    .selectAll("snapshots")
    .select((eb) => eb.fn.count<number>("snapshot_packages.package_id").as("package_count"))
    .groupBy([
      "snapshots.id",
      "snapshots.name",
      "snapshots.description",
      "snapshots.origin",
      "snapshots.created_at",
    ])
    .orderBy("snapshots.created_at")
    .orderBy("snapshots.id")
    .execute();
  return rows.map((r) => ({ ...r, package_count: Number(r.package_count) }));
}

export async function snapshotPackages(db: Kysely<Database>, snapshotId: number): Promise<PackageRecord[]> {
  const rows = await db
    .selectFrom("snapshot_packages")
    .innerJoin("packages", "packages.id", "snapshot_packages.package_id")
    .selectAll("packages")
    .where("snapshot_packages.snapshot_id", "=", snapshotId)
    .orderBy("packages.name")
    .orderBy("packages.arch")
    .orderBy("packages.id")
    .execute();
  return rows.map(toPackageRecord);
}

export async function insertSnapshot(
  trx: Kysely<Database>,
  input: { name: string; description?: string; origin: SnapshotOrigin; packageIds: readonly number[] },
  now: number,
): Promise<SnapshotRow> {
  assertRepoName(input.name, "snapshot");
  const existing = await trx
    .selectFrom("snapshots")
    .select("id")
    .where("name", "=", input.name)
    .executeTakeFirst();
  if (existing) {
    throw new KilnError(
      "SNAPSHOT_EXISTS",
      `snapshot "${input.name}" already exists; snapshots never change`,
      {
        name: input.name,
      },
    );
  }
  const row = await trx
    .insertInto("snapshots")
    .values({
      name: input.name,
      description: input.description ?? "",
      origin: JSON.stringify(input.origin),
      created_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  const ids = [...new Set(input.packageIds)];
  for (let i = 0; i < ids.length; i += 500) {
    await trx
      .insertInto("snapshot_packages")
      .values(ids.slice(i, i + 500).map((package_id) => ({ snapshot_id: row.id, package_id })))
      .execute();
  }
  return row;
}

export async function dropSnapshot(trx: Kysely<Database>, name: string, force: boolean): Promise<void> {
  const snap = await getSnapshot(trx, name);
  const published = await publicationsServing(trx, "snapshot", name);
  if (published.length > 0 && !force) {
    throw new KilnError(
      "SNAPSHOT_PUBLISHED",
      `snapshot "${name}" is published at ${published.join(", ")}; switch or drop those publications first, or use --force`,
      { name, publications: published },
    );
  }
  await trx.deleteFrom("snapshot_packages").where("snapshot_id", "=", snap.id).execute();
  await trx.deleteFrom("snapshots").where("id", "=", snap.id).execute();
}

const nva = (p: PackageRecord) => `${p.name}\u0000${p.arch}`;

/**
 * Aptly's merge: sources in order, a later source's package replacing an earlier one of the same
 * name and architecture; with `latest`, the higher version wins instead.
 */
export function mergePackages(
  sources: readonly (readonly PackageRecord[])[],
  latest: boolean,
): PackageRecord[] {
  const out = new Map<string, PackageRecord>();
  for (const list of sources) {
    for (const pkg of list) {
      const there = out.get(nva(pkg));
      if (!there || !latest || compareVersions(pkg.version, there.version) > 0) out.set(nva(pkg), pkg);
    }
  }
  return [...out.values()];
}

export interface SnapshotDiffEntry {
  name: string;
  arch: string;
  left: string | null;
  right: string | null;
}

/** What differs between two package sets, per name and architecture (Aptly's snapshot diff). */
export function diffPackages(
  left: readonly PackageRecord[],
  right: readonly PackageRecord[],
): SnapshotDiffEntry[] {
  const group = (list: readonly PackageRecord[]) => {
    const m = new Map<string, PackageRecord[]>();
    for (const p of list) m.set(nva(p), [...(m.get(nva(p)) ?? []), p]);
    return m;
  };
  const l = group(left);
  const r = group(right);
  const keys = [...new Set([...l.keys(), ...r.keys()])].sort();
  const out: SnapshotDiffEntry[] = [];
  for (const k of keys) {
    const a = l.get(k) ?? [];
    const b = r.get(k) ?? [];
    const onlyA = a.filter((p) => !b.some((q) => q.id === p.id));
    const onlyB = b.filter((p) => !a.some((q) => q.id === p.id));
    const n = Math.max(onlyA.length, onlyB.length);
    for (let i = 0; i < n; i++) {
      const sample = onlyA[i] ?? onlyB[i];
      if (!sample) continue;
      out.push({
        name: sample.name,
        arch: sample.arch,
        left: onlyA[i]?.key ?? null,
        right: onlyB[i]?.key ?? null,
      });
    }
  }
  return out;
}
