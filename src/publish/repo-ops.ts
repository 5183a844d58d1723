import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { assertFileName } from "../artifacts/upload-area.js";
import { withWriteTx } from "../db/database.js";
import { matchesQuery, parsePackageQuery } from "../debian/package-query.js";
import { KilnError } from "../errors/catalogue.js";
import { recordEvent } from "../events/outbox.js";
import {
  importPackageFile,
  isPackageFileName,
  queryTargetOf,
  toPackageRecord,
  upsertPackages,
  type PackageInput,
  type PackageRecord,
} from "./package-store.js";
import type { PublishDeps } from "./publish-ops.js";
import { packagesOfTag } from "./publish-ops.js";
import { addToRepo, dropRepo, getRepo, removeFromRepo, repoPackages, type AddOutcome } from "./repo-store.js";
import {
  dropSnapshot,
  getSnapshot,
  insertSnapshot,
  mergePackages,
  snapshotPackages,
  type SnapshotOrigin,
} from "./snapshot-store.js";

export type FileReport =
  | { file: string; outcome: "added" | "exists"; key: string }
  | { file: string; outcome: "replaced"; key: string; replaced: string }
  | { file: string; outcome: "failed"; code: string; error: string; key?: string };

export interface RepoAddResult {
  repo: string;
  added: number;
  existing: number;
  failed: number;
  files: FileReport[];
}

/** Filters packages by an Aptly query (an empty query matches nothing: name what you mean). */
export function filterPackages(packages: readonly PackageRecord[], query: string): PackageRecord[] {
  const q = parsePackageQuery(query);
  return packages.filter((p) => matchesQuery(q, queryTargetOf(p)));
}

async function packageFilesIn(dir: string, only?: readonly string[]): Promise<string[]> {
  if (only && only.length > 0) {
    // Names come from the caller: plain file names of the area, never paths out of it.
    for (const f of only) assertFileName(f);
    return only.map((f) => path.join(dir, f));
  }
  const out: string[] = [];
  const walk = async (d: string, depth: number) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory() && depth < 4) await walk(full, depth + 1);
      else if (e.isFile() && isPackageFileName(e.name)) out.push(full);
    }
  };
  await walk(dir, 0);
  return out.sort();
}

const IMPORT_CONCURRENCY = 4;

/**
 * `kiln repo add`: every .deb/.udeb/.dsc of an upload area (or the named files of it) into a
 * repo. Each file is reported on its own — added, already there, replaced or failed with its
 * code — and a failure of one never loses the others. The caller holds the repo's lock.
 */
export async function addFilesToRepo(
  deps: PublishDeps,
  input: { repo: string; dir: string; files?: string[]; forceReplace?: boolean; actor?: string | null },
): Promise<RepoAddResult> {
  const db = deps.db.kysely;
  const repo = await getRepo(db, input.repo);
  const st = await stat(input.dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new KilnError("UPLOAD_NOT_FOUND", `upload directory is missing`);
  const files = await packageFilesIn(input.dir, input.files);
  const reports: FileReport[] = [];
  // A few files at a time, kept in file order; made durable all at once before the rows refer
  // to them (one sync of the file system rather than fsyncs a file).
  const deferSync = deps.blobs.deferredSync();
  const imported: ({ file: string; input: PackageInput } | undefined)[] = files.map(() => undefined);
  let next = 0;
  const importNext = async () => {
    while (next < files.length) {
      const i = next++;
      const file = files[i] as string;
      const rel = path.relative(input.dir, file);
      try {
        imported[i] = { file: rel, input: await importPackageFile(deps.blobs, file, { deferSync }) };
      } catch (err) {
        const code = err instanceof KilnError ? err.code : "INTERNAL";
        reports.push({
          file: rel,
          outcome: "failed",
          code,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(IMPORT_CONCURRENCY, files.length) }, importNext));
  await deferSync.flush();
  const good = imported.filter((g) => g !== undefined);
  const outcomes = await withWriteTx(deps.db, async (trx) => {
    const now = deps.clock.now();
    const records = await upsertPackages(
      trx,
      good.map((g) => g.input),
      now,
    );
    const result = await addToRepo(trx, repo.id, records, { forceReplace: input.forceReplace });
    const changed = result.filter((o) => o.outcome === "added" || o.outcome === "replaced").length;
    if (changed > 0) {
      await recordEvent(trx, "repo.changed", { repo: repo.name, added: changed }, input.actor ?? null, now);
    }
    return result;
  });
  outcomes.forEach((o: AddOutcome, i) => {
    const file = good[i]?.file ?? "";
    switch (o.outcome) {
      case "added":
      case "exists":
        reports.push({ file, outcome: o.outcome, key: o.key });
        break;
      case "replaced":
        reports.push({ file, outcome: "replaced", key: o.key, replaced: o.replaced });
        break;
      case "conflict":
        reports.push({
          file,
          outcome: "failed",
          key: o.key,
          code: "PACKAGE_CONFLICT",
          error: `${file}: the repo has ${o.conflictsWith} with the same name, version and architecture and different content; use --force-replace to replace it`,
        });
        break;
    }
  });
  reports.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return {
    repo: repo.name,
    added: reports.filter((r) => r.outcome === "added" || r.outcome === "replaced").length,
    existing: reports.filter((r) => r.outcome === "exists").length,
    failed: reports.filter((r) => r.outcome === "failed").length,
    files: reports,
  };
}

export interface ChangeResult {
  repo: string;
  keys: string[];
}

export async function removeFromRepoByQuery(
  deps: PublishDeps,
  input: { repo: string; query: string; actor?: string | null },
): Promise<ChangeResult> {
  return withWriteTx(deps.db, async (trx) => {
    const repo = await getRepo(trx, input.repo);
    const matched = filterPackages(await repoPackages(trx, repo.id), input.query);
    await removeFromRepo(
      trx,
      repo.id,
      matched.map((p) => p.id),
    );
    if (matched.length > 0) {
      await recordEvent(
        trx,
        "repo.changed",
        { repo: repo.name, removed: matched.length },
        input.actor ?? null,
        deps.clock.now(),
      );
    }
    return { repo: repo.name, keys: matched.map((p) => p.key) };
  });
}

/** Removes packages by key (Aptly's DELETE /api/repos/:name/packages). */
export async function removeFromRepoByKeys(
  deps: PublishDeps,
  input: { repo: string; keys: string[]; actor?: string | null },
): Promise<ChangeResult> {
  return withWriteTx(deps.db, async (trx) => {
    const repo = await getRepo(trx, input.repo);
    const wanted = new Set(input.keys);
    const matched = (await repoPackages(trx, repo.id)).filter((p) => wanted.has(p.key));
    await removeFromRepo(
      trx,
      repo.id,
      matched.map((p) => p.id),
    );
    return { repo: repo.name, keys: matched.map((p) => p.key) };
  });
}

/** Adds packages already known to Kiln by key (Aptly's POST /api/repos/:name/packages). */
export async function addKeysToRepo(
  deps: PublishDeps,
  input: { repo: string; keys: string[]; forceReplace?: boolean; actor?: string | null },
): Promise<{ repo: string; outcomes: AddOutcome[] }> {
  return withWriteTx(deps.db, async (trx) => {
    const repo = await getRepo(trx, input.repo);
    const rows =
      input.keys.length === 0
        ? []
        : await trx.selectFrom("packages").selectAll().where("key", "in", input.keys).execute();
    const found = new Set(rows.map((r) => r.key));
    const missing = input.keys.filter((k) => !found.has(k));
    if (missing.length > 0) {
      throw new KilnError(
        "PACKAGE_NOT_FOUND",
        `no package with key ${missing.map((k) => `"${k}"`).join(", ")}`,
        {
          keys: missing,
        },
      );
    }
    const outcomes = await addToRepo(trx, repo.id, rows.map(toPackageRecord), {
      forceReplace: input.forceReplace,
    });
    const conflict = outcomes.find((o) => o.outcome === "conflict");
    if (conflict) {
      throw new KilnError(
        "PACKAGE_CONFLICT",
        `${conflict.key} conflicts with ${(conflict as { conflictsWith: string }).conflictsWith} in ${repo.name}`,
      );
    }
    return { repo: repo.name, outcomes };
  });
}

/** `kiln repo copy|move SRC DST QUERY`. */
export async function copyBetweenRepos(
  deps: PublishDeps,
  input: {
    from: string;
    to: string;
    query: string;
    move: boolean;
    forceReplace?: boolean;
    actor?: string | null;
  },
): Promise<{ from: string; to: string; keys: string[]; outcomes: AddOutcome[] }> {
  return withWriteTx(deps.db, async (trx) => {
    const src = await getRepo(trx, input.from);
    const dst = await getRepo(trx, input.to);
    if (src.id === dst.id)
      throw new KilnError("VALIDATION_FAILED", "source and destination are the same repo");
    const matched = filterPackages(await repoPackages(trx, src.id), input.query);
    const outcomes = await addToRepo(trx, dst.id, matched, { forceReplace: input.forceReplace });
    const conflicts = outcomes.filter((o) => o.outcome === "conflict");
    if (conflicts.length > 0) {
      throw new KilnError(
        "PACKAGE_CONFLICT",
        `${dst.name} already has other packages with the same name, version and architecture: ${conflicts.map((c) => c.key).join(", ")}; nothing was copied`,
      );
    }
    if (input.move) {
      await removeFromRepo(
        trx,
        src.id,
        matched.map((p) => p.id),
      );
    }
    await recordEvent(
      trx,
      "repo.changed",
      { repo: dst.name, added: matched.length, from: src.name, move: input.move },
      input.actor ?? null,
      deps.clock.now(),
    );
    return { from: src.name, to: dst.name, keys: matched.map((p) => p.key), outcomes };
  });
}

/** `kiln repo import-tag NAME TAG`: the tag's latest builds (through inheritance) into the repo. */
export async function importTagIntoRepo(
  deps: PublishDeps,
  input: { repo: string; tag: string; event?: number; forceReplace?: boolean; actor?: string | null },
): Promise<{ repo: string; tag: string; event: number; outcomes: AddOutcome[] }> {
  const { packages, event } = await packagesOfTag(deps, input.tag, input.event);
  return withWriteTx(deps.db, async (trx) => {
    const repo = await getRepo(trx, input.repo);
    const outcomes = await addToRepo(trx, repo.id, packages, { forceReplace: input.forceReplace });
    const conflicts = outcomes.filter((o) => o.outcome === "conflict");
    if (conflicts.length > 0) {
      throw new KilnError(
        "PACKAGE_CONFLICT",
        `${repo.name} already has other packages with the same name, version and architecture: ${conflicts.map((c) => c.key).join(", ")}; nothing was imported (use --force-replace)`,
      );
    }
    await recordEvent(
      trx,
      "repo.changed",
      { repo: repo.name, tag: input.tag, event },
      input.actor ?? null,
      deps.clock.now(),
    );
    return { repo: repo.name, tag: input.tag, event, outcomes };
  });
}

export async function dropRepoOp(
  deps: PublishDeps,
  input: { repo: string; force?: boolean; actor?: string | null },
): Promise<{ repo: string }> {
  await withWriteTx(deps.db, async (trx) => {
    await dropRepo(trx, input.repo, input.force === true);
    await recordEvent(trx, "repo.dropped", { repo: input.repo }, input.actor ?? null, deps.clock.now());
  });
  return { repo: input.repo };
}

// --- Snapshots -----------------------------------------------------------------------------------

export interface SnapshotResult {
  snapshot: string;
  packageCount: number;
}

export type SnapshotSource =
  | { kind: "repo"; repo: string }
  | { kind: "tag"; tag: string; event?: number }
  | { kind: "merge"; sources: string[]; latest?: boolean }
  | { kind: "filter"; source: string; query: string }
  | { kind: "keys"; keys: string[] };

export async function createSnapshot(
  deps: PublishDeps,
  input: { name: string; description?: string; from: SnapshotSource; actor?: string | null },
): Promise<SnapshotResult> {
  const db = deps.db.kysely;
  let packages: PackageRecord[];
  let origin: SnapshotOrigin;
  const from = input.from;
  switch (from.kind) {
    case "repo": {
      const repo = await getRepo(db, from.repo);
      packages = await repoPackages(db, repo.id);
      origin = { kind: "repo", repo: repo.name };
      break;
    }
    case "tag": {
      const res = await packagesOfTag(deps, from.tag, from.event);
      packages = res.packages;
      origin = { kind: "tag", tag: from.tag, event: res.event };
      break;
    }
    case "merge": {
      if (from.sources.length === 0)
        throw new KilnError("VALIDATION_FAILED", "merge needs at least one source snapshot");
      const lists: PackageRecord[][] = [];
      for (const s of from.sources) lists.push(await snapshotPackages(db, (await getSnapshot(db, s)).id));
      packages = mergePackages(lists, from.latest === true);
      origin = { kind: "merge", sources: from.sources, latest: from.latest === true };
      break;
    }
    case "filter": {
      const src = await getSnapshot(db, from.source);
      packages = filterPackages(await snapshotPackages(db, src.id), from.query);
      origin = { kind: "filter", source: from.source, query: from.query };
      break;
    }
    case "keys": {
      const rows =
        from.keys.length === 0
          ? []
          : await db.selectFrom("packages").selectAll().where("key", "in", from.keys).execute();
      if (rows.length !== new Set(from.keys).size) {
        const found = new Set(rows.map((r) => r.key));
        throw new KilnError(
          "PACKAGE_NOT_FOUND",
          `unknown package keys: ${from.keys.filter((k) => !found.has(k)).join(", ")}`,
        );
      }
      packages = rows.map(toPackageRecord);
      origin = { kind: "packages" };
      break;
    }
  }
  await withWriteTx(deps.db, async (trx) => {
    const now = deps.clock.now();
    await insertSnapshot(
      trx,
      { name: input.name, description: input.description, origin, packageIds: packages.map((p) => p.id) },
      now,
    );
    await recordEvent(trx, "snapshot.created", { snapshot: input.name, origin }, input.actor ?? null, now);
  });
  return { snapshot: input.name, packageCount: packages.length };
}

export async function dropSnapshotOp(
  deps: PublishDeps,
  input: { name: string; force?: boolean; actor?: string | null },
): Promise<{ snapshot: string }> {
  await withWriteTx(deps.db, async (trx) => {
    await dropSnapshot(trx, input.name, input.force === true);
    await recordEvent(
      trx,
      "snapshot.dropped",
      { snapshot: input.name },
      input.actor ?? null,
      deps.clock.now(),
    );
  });
  return { snapshot: input.name };
}
