import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { BlobStore } from "../artifacts/blob-store.js";
import { latestInTag } from "../builds/tag-store.js";
import { withWriteTx, type Db } from "../db/database.js";
import { KilnError } from "../errors/catalogue.js";
import { latestEventId, recordEvent } from "../events/outbox.js";
import {
  applyPublication,
  generationsOnDisk,
  removeDistribution,
  startPool,
  switchGeneration,
  type PoolFilling,
  type PublishDirs,
  type Signer,
} from "./apply-publication.js";
import {
  readBinaryPackage,
  readSourcePackage,
  toPackageRecord,
  upsertPackage,
  type PackageRecord,
} from "./package-store.js";
import { planPool, planPublication, type PlanComponent, type PublicationPlan } from "./plan-publication.js";
import {
  generationHistory,
  getGeneration,
  getPublication,
  insertPublication,
  type PublicationRow,
  type PublicationSource,
  type PublicationSpec,
} from "./publication-store.js";
import { removeInterruptedStaging } from "./recover.js";
import { getRepo, repoPackages } from "./repo-store.js";
import { getSnapshot, snapshotPackages } from "./snapshot-store.js";

export interface PublishDeps {
  db: Db;
  clock: { now(): number };
  blobs: BlobStore;
  dirs: PublishDirs;
  /** The archive key's signer, made on first use. */
  signer(): Promise<Signer>;
  log: Logger;
  /** Told how each publishGeneration went and how long it took (the hub's metrics). */
  observePublish?: (outcome: "live" | "unchanged" | "failed", seconds: number) => void;
}

export interface PublishOutcome {
  prefix: string;
  distribution: string;
  generation: number;
  releaseSha256: string;
  packageCount: number;
  /** Nothing changed since the live generation: no new one was made. */
  unchanged?: boolean;
}

// --- Packages of builds (tags) -------------------------------------------------------------------

/**
 * The package rows of a build's .deb/.udeb/.dsc artifacts, made on first use from the blobs
 * (a tag's builds become packages the first time something publishes or snapshots them).
 */
export async function packagesOfBuild(deps: PublishDeps, buildId: number): Promise<PackageRecord[]> {
  const db = deps.db.kysely;
  const artifacts = await db
    .selectFrom("artifacts")
    .select(["name", "sha256", "kind"])
    .where("build_id", "=", buildId)
    .where("kind", "in", ["deb", "udeb", "dsc", "source"])
    .execute();
  const out: PackageRecord[] = [];
  for (const a of artifacts) {
    if (a.kind === "source") continue;
    const row = await db.selectFrom("packages").selectAll().where("sha256", "=", a.sha256).executeTakeFirst();
    if (row) {
      out.push(toPackageRecord(row));
      continue;
    }
    const blobOf = (name: string) => {
      const match = artifacts.find((x) => x.name === name);
      return match ? deps.blobs.path(match.sha256) : undefined;
    };
    const input =
      a.kind === "dsc"
        ? await readSourcePackage(deps.blobs.path(a.sha256), a.name, blobOf)
        : await readBinaryPackage(deps.blobs.path(a.sha256), a.name, a.kind === "udeb" ? "udeb" : "deb");
    out.push(await upsertPackage(db, input, deps.clock.now()));
  }
  return out;
}

/** A tag's latest builds (through inheritance) as packages, optionally as of an event. */
export async function packagesOfTag(
  deps: PublishDeps,
  tag: string,
  event?: number,
): Promise<{ packages: PackageRecord[]; event: number }> {
  // The event first, and the tag as of it: contents and the event they are recorded with agree
  // even when the tag changes meanwhile.
  const asOf = event ?? (await latestEventId(deps.db.kysely));
  const latest = await latestInTag(deps, tag, asOf);
  const packages: PackageRecord[] = [];
  for (const b of latest) packages.push(...(await packagesOfBuild(deps, b.buildId)));
  return { packages, event: asOf };
}

// --- Publishing ----------------------------------------------------------------------------------

async function resolveContents(
  deps: PublishDeps,
  row: PublicationRow,
): Promise<{ components: PlanComponent[]; sources: unknown[] }> {
  const db = deps.db.kysely;
  const components: PlanComponent[] = [];
  const sources: unknown[] = [];
  for (const s of JSON.parse(row.sources) as PublicationSource[]) {
    switch (row.source_kind) {
      case "local": {
        const repo = await getRepo(db, s.name);
        components.push({ component: s.component, packages: await repoPackages(db, repo.id) });
        sources.push({ component: s.component, repo: s.name });
        break;
      }
      case "snapshot": {
        const snap = await getSnapshot(db, s.name);
        components.push({ component: s.component, packages: await snapshotPackages(db, snap.id) });
        sources.push({ component: s.component, snapshot: s.name });
        break;
      }
      case "tag": {
        const { packages, event } = await packagesOfTag(deps, s.name);
        components.push({ component: s.component, packages });
        sources.push({ component: s.component, tag: s.name, event });
        break;
      }
      default:
        throw new KilnError("INTERNAL", `unknown publication source kind ${row.source_kind}`);
    }
  }
  return { components, sources };
}

/** Identifies what a generation serves, so a republish with nothing new makes none. */
function contentHash(row: PublicationRow, components: readonly PlanComponent[]): string {
  const h = createHash("sha256");
  h.update(`${row.architectures}|${row.origin}|${row.label}|${row.skip_signing}\n`);
  for (const c of components) {
    h.update(`${c.component}:`);
    for (const id of c.packages.map((p) => p.id).sort((a, b) => a - b)) h.update(`${id},`);
    h.update("\n");
  }
  return h.digest("hex");
}

/**
 * Makes a new generation of a publication from its sources and switches it live. The caller
 * holds the publication's lock (a task's `publish:` resource), so generations never interleave.
 */
export async function publishGeneration(
  deps: PublishDeps,
  row: PublicationRow,
  opts: { taskId?: number | null; actor?: string | null; skipIfUnchanged?: boolean } = {},
): Promise<PublishOutcome> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  try {
    const out = await publishGenerationUnobserved(deps, row, opts);
    deps.observePublish?.(out.unchanged ? "unchanged" : "live", seconds());
    return out;
  } catch (err) {
    deps.observePublish?.("failed", seconds());
    throw err;
  }
}

async function publishGenerationUnobserved(
  deps: PublishDeps,
  row: PublicationRow,
  opts: { taskId?: number | null; actor?: string | null; skipIfUnchanged?: boolean },
): Promise<PublishOutcome> {
  const db = deps.db.kysely;
  const { components, sources } = await resolveContents(deps, row);
  const hash = contentHash(row, components);
  if (opts.skipIfUnchanged && row.live_generation !== null) {
    const live = await getGeneration(db, row.id, row.live_generation);
    const onDisk = await generationsOnDisk(deps.dirs, row.prefix, row.distribution);
    const liveSources = live ? (JSON.parse(live.sources) as { contentHash?: string }) : undefined;
    if (live && liveSources?.contentHash === hash && onDisk.includes(live.generation)) {
      return {
        prefix: row.prefix,
        distribution: row.distribution,
        generation: live.generation,
        releaseSha256: live.release_sha256 ?? "",
        packageCount: live.package_count,
        unchanged: true,
      };
    }
  }
  const planInput = {
    distribution: row.distribution,
    components,
    architectures: JSON.parse(row.architectures) as string[],
  };
  const pool = planPool(planInput);
  // The pool files go in place while the indexes are made: a first publish of a large repo makes
  // a directory per source package, work for the kernel that runs beside the index text's.
  const pooled = startPool(deps.dirs, deps.blobs, row.prefix, row.distribution, pool);
  try {
    const plan = planPublication(planInput, pool);
    return await makeGeneration(deps, row, opts, { plan, pooled, sources, hash });
  } finally {
    await pooled.done.catch(() => undefined); // never left running past the task, whatever failed
  }
}

/** Records a new generation of `plan`, applies it and makes it live (or records its failure). */
async function makeGeneration(
  deps: PublishDeps,
  row: PublicationRow,
  opts: { taskId?: number | null; actor?: string | null },
  input: { plan: PublicationPlan; pooled: PoolFilling; sources: unknown[]; hash: string },
): Promise<PublishOutcome> {
  const { plan, pooled, sources, hash } = input;
  const now = deps.clock.now();
  let interrupted: number[] = [];
  const generation = await withWriteTx(deps.db, async (trx) => {
    const fresh = await trx
      .updateTable("publications")
      .set((eb) => ({ next_generation: eb("next_generation", "+", 1) }))
      .where("id", "=", row.id)
      .returning("next_generation")
      .executeTakeFirstOrThrow();
    const gen = fresh.next_generation - 1;
    // We hold the publication's lock: any other generation still "staged" was cut off by a crash.
    interrupted = (
      await trx
        .updateTable("publication_generations")
        .set({ state: "failed", error: "interrupted before it went live" })
        .where("publication_id", "=", row.id)
        .where("state", "=", "staged")
        .returning("generation")
        .execute()
    ).map((g) => g.generation);
    await trx
      .insertInto("publication_generations")
      .values({
        publication_id: row.id,
        generation: gen,
        state: "staged",
        sources: JSON.stringify({ sources, contentHash: hash }),
        package_count: plan.packageCount,
        release_sha256: null,
        task_id: opts.taskId ?? null,
        error: null,
        created_at: now,
        live_at: null,
      })
      .execute();
    await recordEvent(
      trx,
      "publish.started",
      { prefix: row.prefix, distribution: row.distribution, generation: gen },
      opts.actor ?? null,
      now,
    );
    return gen;
  });
  // What a crashed attempt half-wrote would otherwise stay until the hourly sweep of a restart.
  await removeInterruptedStaging(deps.db, deps.dirs.stagingDir, row, interrupted);

  let releaseSha256: string;
  try {
    const result = await applyPublication(deps.dirs, deps.blobs, {
      plan,
      pooled,
      prefix: row.prefix,
      generation,
      meta: { origin: row.origin, label: row.label },
      signer: row.skip_signing ? undefined : await deps.signer(),
      date: new Date(deps.clock.now()),
    });
    releaseSha256 = result.releaseSha256;
  } catch (err) {
    await withWriteTx(deps.db, async (trx) => {
      await trx
        .updateTable("publication_generations")
        .set({ state: "failed", error: err instanceof Error ? err.message.slice(0, 2000) : String(err) })
        .where("publication_id", "=", row.id)
        .where("generation", "=", generation)
        .execute();
      await recordEvent(
        trx,
        "publish.failed",
        { prefix: row.prefix, distribution: row.distribution, generation, error: String(err).slice(0, 500) },
        opts.actor ?? null,
        deps.clock.now(),
      );
    });
    throw err;
  }
  await markLive(deps, row, generation, releaseSha256, opts.actor ?? null, "publish.live");
  return {
    prefix: row.prefix,
    distribution: row.distribution,
    generation,
    releaseSha256,
    packageCount: plan.packageCount,
  };
}

async function markLive(
  deps: PublishDeps,
  row: PublicationRow,
  generation: number,
  releaseSha256: string | null,
  actor: string | null,
  event: string,
): Promise<void> {
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    await trx
      .updateTable("publication_generations")
      .set({ state: "retired" })
      .where("publication_id", "=", row.id)
      .where("state", "=", "live")
      .execute();
    await trx
      .updateTable("publication_generations")
      .set((eb) => ({
        state: "live",
        live_at: now,
        release_sha256: releaseSha256 === null ? eb.ref("release_sha256") : releaseSha256,
      }))
      .where("publication_id", "=", row.id)
      .where("generation", "=", generation)
      .execute();
    await trx
      .updateTable("publications")
      .set({ live_generation: generation, updated_at: now })
      .where("id", "=", row.id)
      .execute();
    await recordEvent(
      trx,
      event,
      { prefix: row.prefix, distribution: row.distribution, generation },
      actor,
      now,
    );
  });
}

/** `kiln publish repo|snapshot|tag`: a new publication and its first generation. */
export async function createPublication(
  deps: PublishDeps,
  spec: PublicationSpec,
  opts: { taskId?: number | null; actor?: string | null } = {},
): Promise<PublishOutcome> {
  const row = await withWriteTx(deps.db, (trx) => insertPublication(trx, spec, deps.clock.now()));
  try {
    return await publishGeneration(deps, row, opts);
  } catch (err) {
    // A first publish that fails leaves nothing behind.
    await withWriteTx(deps.db, (trx) => trx.deleteFrom("publications").where("id", "=", row.id).execute());
    await removeDistribution(deps.dirs, row.prefix, row.distribution);
    throw err;
  }
}

/** `kiln publish update`: republish from the current contents of the sources. */
export async function updatePublication(
  deps: PublishDeps,
  prefix: string,
  distribution: string,
  opts: { taskId?: number | null; actor?: string | null; skipIfUnchanged?: boolean } = {},
): Promise<PublishOutcome> {
  const row = await getPublication(deps.db.kysely, prefix, distribution);
  return publishGeneration(deps, row, opts);
}

/** `kiln publish switch`: the same publication made from other snapshots. */
export async function switchPublication(
  deps: PublishDeps,
  prefix: string,
  distribution: string,
  sources: PublicationSource[],
  opts: { taskId?: number | null; actor?: string | null } = {},
): Promise<PublishOutcome> {
  const db = deps.db.kysely;
  const row = await getPublication(db, prefix, distribution);
  if (row.source_kind !== "snapshot") {
    throw new KilnError(
      "VALIDATION_FAILED",
      `${prefix}/${distribution} publishes a ${row.source_kind === "local" ? "local repo" : "tag"}; only snapshot publications switch`,
    );
  }
  for (const s of sources) await getSnapshot(db, s.name);
  const old = JSON.parse(row.sources) as PublicationSource[];
  const merged = old.map((o) => sources.find((s) => s.component === o.component) ?? o);
  for (const s of sources) {
    if (!old.some((o) => o.component === s.component)) {
      throw new KilnError("VALIDATION_FAILED", `${prefix}/${distribution} has no component "${s.component}"`);
    }
  }
  const updated = { ...row, sources: JSON.stringify(merged) };
  const outcome = await publishGeneration(deps, updated, opts);
  // The new sources are recorded only once their generation is live.
  await deps.db.kysely
    .updateTable("publications")
    .set({ sources: updated.sources })
    .where("id", "=", row.id)
    .execute();
  return outcome;
}

/**
 * `kiln publish rollback`: back to the generation that was live before (or `to`), in one
 * symlink switch; nothing is rebuilt, so the Release served is the old one byte for byte.
 */
export async function rollbackPublication(
  deps: PublishDeps,
  prefix: string,
  distribution: string,
  opts: { to?: number; actor?: string | null } = {},
): Promise<PublishOutcome> {
  const db = deps.db.kysely;
  const row = await getPublication(db, prefix, distribution);
  const onDisk = new Set(await generationsOnDisk(deps.dirs, prefix, distribution));
  let target = opts.to;
  if (target === undefined) {
    const previous = (await generationHistory(db, row.id))
      .filter((g) => g.live_at !== null && g.generation !== row.live_generation && onDisk.has(g.generation))
      .sort((a, b) => (b.live_at ?? 0) - (a.live_at ?? 0))[0];
    if (!previous) {
      throw new KilnError(
        "GENERATION_NOT_FOUND",
        `${prefix}/${distribution} has no earlier generation to roll back to`,
      );
    }
    target = previous.generation;
  }
  const gen = await getGeneration(db, row.id, target);
  if (!gen || gen.release_sha256 === null || !onDisk.has(target)) {
    throw new KilnError(
      "GENERATION_NOT_FOUND",
      `generation ${target} of ${prefix}/${distribution} cannot be rolled back to: ${gen ? "it is no longer on disk" : "there is no such generation"}; \`kiln publish show\` lists them`,
      { generation: target },
    );
  }
  const releaseSha256 = await switchGeneration(deps.dirs, prefix, distribution, target);
  await markLive(deps, row, target, null, opts.actor ?? null, "publish.rolled_back");
  // A snapshot publication serves the snapshots of that generation again: record them, so that
  // `show` tells the truth and the next update starts from them.
  const recorded = (JSON.parse(gen.sources) as { sources?: { component: string; snapshot?: string }[] })
    .sources;
  if (row.source_kind === "snapshot" && recorded?.every((r) => typeof r.snapshot === "string")) {
    const sources: PublicationSource[] = recorded.map((r) => ({
      component: r.component,
      name: r.snapshot as string,
    }));
    await db
      .updateTable("publications")
      .set({ sources: JSON.stringify(sources) })
      .where("id", "=", row.id)
      .execute();
  }
  return { prefix, distribution, generation: target, releaseSha256, packageCount: gen.package_count };
}

/** `kiln publish drop`: stops serving the distribution (pool files are left to the collector). */
export async function dropPublication(
  deps: PublishDeps,
  prefix: string,
  distribution: string,
  actor: string | null,
): Promise<void> {
  const row = await getPublication(deps.db.kysely, prefix, distribution);
  await removeDistribution(deps.dirs, prefix, distribution);
  await withWriteTx(deps.db, async (trx) => {
    await trx.deleteFrom("publication_generations").where("publication_id", "=", row.id).execute();
    await trx.deleteFrom("publications").where("id", "=", row.id).execute();
    await recordEvent(trx, "publish.dropped", { prefix, distribution }, actor, deps.clock.now());
  });
}
