import type { Kysely, Selectable } from "kysely";
import type { Database, ReposTable } from "../db/schema.js";
import { isValidArchitecture } from "../debian/version.js";
import { KilnError } from "../errors/catalogue.js";
import {
  knownPackageRecord,
  rememberPackageRecords,
  toPackageRecord,
  type PackageRecord,
} from "./package-store.js";

/** Repo and snapshot names: safe in a URL path segment and a lock name. */
export const REPO_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$/;
/** Distributions and components: what a dists/ path may hold (no "/" and no dot-only names). */
export const DIST_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$/;

export interface RepoJson {
  name: string;
  comment: string;
  distribution: string;
  component: string;
  packageCount?: number;
  createdAt: string;
}

export type RepoRow = Selectable<ReposTable>;

export function assertRepoName(name: string, what = "repository"): void {
  if (!REPO_NAME_RE.test(name)) {
    throw new KilnError(
      "INVALID_NAME",
      `${what} name "${name.slice(0, 100)}" is not allowed: use 1 to 100 letters, digits and . _ + ~ - (not starting with a symbol)`,
      { name: name.slice(0, 200) },
    );
  }
}

export function assertDistPart(value: string, what: "distribution" | "component"): void {
  if (!DIST_RE.test(value)) {
    throw new KilnError(
      "INVALID_NAME",
      `${what} "${value.slice(0, 100)}" is not allowed: use 1 to 100 letters, digits and . _ + ~ - (no "/")`,
      { [what]: value.slice(0, 200) },
    );
  }
}

export function assertArchitectures(arches: readonly string[]): void {
  for (const a of arches) {
    if (a !== "source" && !isValidArchitecture(a)) {
      throw new KilnError("INVALID_ARCHITECTURE", `"${a.slice(0, 50)}" is not an architecture name`, {
        arch: a,
      });
    }
  }
}

export function toRepoJson(row: RepoRow, packageCount?: number): RepoJson {
  return {
    name: row.name,
    comment: row.comment,
    distribution: row.distribution,
    component: row.component,
    ...(packageCount === undefined ? {} : { packageCount }),
    createdAt: new Date(row.created_at).toISOString(),
  };
}

export interface RepoInput {
  name: string;
  comment?: string;
  distribution?: string;
  component?: string;
}

export async function createRepo(db: Kysely<Database>, input: RepoInput, now: number): Promise<RepoRow> {
  assertRepoName(input.name);
  if (input.distribution) assertDistPart(input.distribution, "distribution");
  const component = input.component || "main";
  assertDistPart(component, "component");
  const existing = await db
    .selectFrom("repos")
    .select("id")
    .where("name", "=", input.name)
    .executeTakeFirst();
  if (existing)
    throw new KilnError("REPO_EXISTS", `local repo "${input.name}" already exists`, { name: input.name });
  return db
    .insertInto("repos")
    .values({
      name: input.name,
      comment: input.comment ?? "",
      distribution: input.distribution ?? "",
      component,
      created_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function getRepo(db: Kysely<Database>, name: string): Promise<RepoRow> {
  const row = await db.selectFrom("repos").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) {
    throw new KilnError("REPO_NOT_FOUND", `no local repo "${name}"; \`kiln repo list\` shows them`, { name });
  }
  return row;
}

export async function listRepos(db: Kysely<Database>): Promise<(RepoRow & { package_count: number })[]> {
  const rows = await db
    .selectFrom("repos")
    .leftJoin("repo_packages", "repo_packages.repo_id", "repos.id")
    .selectAll("repos")
    .select((eb) => eb.fn.count<number>("repo_packages.package_id").as("package_count"))
    .groupBy([
      "repos.id",
      "repos.name",
      "repos.comment",
      "repos.distribution",
      "repos.component",
      "repos.created_at",
    ])
    .orderBy("repos.name")
    .execute();
  return rows.map((r) => ({ ...r, package_count: Number(r.package_count) }));
}

export async function editRepo(
  db: Kysely<Database>,
  name: string,
  patch: { comment?: string; distribution?: string; component?: string },
): Promise<RepoRow> {
  const repo = await getRepo(db, name);
  if (patch.distribution) assertDistPart(patch.distribution, "distribution");
  if (patch.component !== undefined) assertDistPart(patch.component, "component");
  const set: Partial<RepoRow> = {};
  if (patch.comment !== undefined) set.comment = patch.comment;
  if (patch.distribution !== undefined) set.distribution = patch.distribution;
  if (patch.component !== undefined) set.component = patch.component;
  if (Object.keys(set).length === 0) return repo;
  return db.updateTable("repos").set(set).where("id", "=", repo.id).returningAll().executeTakeFirstOrThrow();
}

export async function repoPackages(db: Kysely<Database>, repoId: number): Promise<PackageRecord[]> {
  // Ids and keys first; whole rows only for the records this process has not made yet.
  const ids = await db
    .selectFrom("repo_packages")
    .innerJoin("packages", "packages.id", "repo_packages.package_id")
    .select(["packages.id", "packages.key"])
    .where("repo_packages.repo_id", "=", repoId)
    .orderBy("packages.name")
    .orderBy("packages.arch")
    .orderBy("packages.id")
    .execute();
  const out: (PackageRecord | undefined)[] = ids.map((r) => knownPackageRecord(r.id, r.key));
  const missing = ids.filter((_, i) => out[i] === undefined).map((r) => r.id);
  const fetched = new Map<number, PackageRecord>();
  for (let i = 0; i < missing.length; i += 500) {
    const rows = await db
      .selectFrom("packages")
      .selectAll()
      .where("id", "in", missing.slice(i, i + 500))
      .execute();
    const records = rows.map(toPackageRecord);
    rememberPackageRecords(records);
    for (const r of records) fetched.set(r.id, r);
  }
  return out.map((r, i) => {
    const row = ids[i] as { id: number; key: string };
    const rec = r ?? fetched.get(row.id);
    if (!rec) throw new KilnError("INTERNAL", `package ${row.key} vanished while it was read`);
    return rec;
  });
}

export type AddOutcome =
  | { key: string; outcome: "added" | "exists" }
  | { key: string; outcome: "replaced"; replaced: string }
  | { key: string; outcome: "conflict"; conflictsWith: string };

const nva = (p: { name: string; version: string; arch: string }) =>
  `${p.name}\u0000${p.version}\u0000${p.arch}`;

/**
 * Adds packages to a repo. A repo holds one package per name, version and architecture: the
 * same key again is "exists"; another key for the same triple is a conflict, or replaces the
 * old one with `forceReplace` (Aptly's -force-replace).
 */
export async function addToRepo(
  trx: Kysely<Database>,
  repoId: number,
  packages: readonly PackageRecord[],
  opts: { forceReplace?: boolean } = {},
): Promise<AddOutcome[]> {
  // Only what the check needs: a repo of tens of thousands has megabytes of control text.
  const current = await trx
    .selectFrom("repo_packages")
    .innerJoin("packages", "packages.id", "repo_packages.package_id")
    .select(["packages.id", "packages.key", "packages.name", "packages.version", "packages.arch"])
    .where("repo_packages.repo_id", "=", repoId)
    .execute();
  const byNva = new Map<string, { id: number; key: string }>(current.map((p) => [nva(p), p]));
  const outcomes: AddOutcome[] = [];
  const insert: number[] = [];
  const remove: number[] = [];
  for (const pkg of packages) {
    const there = byNva.get(nva(pkg));
    if (there?.id === pkg.id) {
      outcomes.push({ key: pkg.key, outcome: "exists" });
      continue;
    }
    if (there && !opts.forceReplace) {
      outcomes.push({ key: pkg.key, outcome: "conflict", conflictsWith: there.key });
      continue;
    }
    if (there) remove.push(there.id);
    insert.push(pkg.id);
    byNva.set(nva(pkg), { id: pkg.id, key: pkg.key });
    outcomes.push(
      there ? { key: pkg.key, outcome: "replaced", replaced: there.key } : { key: pkg.key, outcome: "added" },
    );
  }
  await removeFromRepo(trx, repoId, remove);
  for (let i = 0; i < insert.length; i += 500) {
    const chunk = insert.slice(i, i + 500);
    await trx
      .insertInto("repo_packages")
      .values(chunk.map((package_id) => ({ repo_id: repoId, package_id })))
      .execute();
  }
  return outcomes;
}

export async function removeFromRepo(
  trx: Kysely<Database>,
  repoId: number,
  packageIds: readonly number[],
): Promise<void> {
  for (let i = 0; i < packageIds.length; i += 500) {
    await trx
      .deleteFrom("repo_packages")
      .where("repo_id", "=", repoId)
      .where("package_id", "in", packageIds.slice(i, i + 500))
      .execute();
  }
}

/** Publications that serve a local repo or a snapshot directly, as `prefix/distribution`. */
export async function publicationsServing(
  db: Kysely<Database>,
  kind: "local" | "snapshot",
  name: string,
): Promise<string[]> {
  const rows = await db
    .selectFrom("publications")
    .select(["prefix", "distribution", "sources"])
    .where("source_kind", "=", kind)
    .execute();
  return rows
    .filter((r) => (JSON.parse(r.sources) as { name: string }[]).some((s) => s.name === name))
    .map((r) => `${r.prefix}/${r.distribution}`);
}

export async function dropRepo(trx: Kysely<Database>, name: string, force: boolean): Promise<void> {
  const repo = await getRepo(trx, name);
  const published = await publicationsServing(trx, "local", name);
  if (published.length > 0 && !force) {
    throw new KilnError(
      "REPO_PUBLISHED",
      `local repo "${name}" is published at ${published.join(", ")}; drop those publications first, or use --force`,
      { name, publications: published },
    );
  }
  await trx.deleteFrom("repo_packages").where("repo_id", "=", repo.id).execute();
  await trx.deleteFrom("repos").where("id", "=", repo.id).execute();
}
