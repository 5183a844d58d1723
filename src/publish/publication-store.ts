import type { Kysely, Selectable } from "kysely";
import type { Database, PublicationGenerationsTable, PublicationsTable } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import { assertPrefix } from "./apply-publication.js";
import { assertArchitectures, assertDistPart, assertRepoName } from "./repo-store.js";

export type PublicationRow = Selectable<PublicationsTable>;
export type GenerationRow = Selectable<PublicationGenerationsTable>;
export type SourceKind = "local" | "snapshot" | "tag";

export interface PublicationSource {
  component: string;
  name: string;
}

export interface GenerationJson {
  generation: number;
  state: string;
  sources: unknown;
  packageCount: number;
  releaseSha256: string | null;
  taskId: number | null;
  error: string | null;
  createdAt: string;
  liveAt: string | null;
}

export interface PublicationJson {
  prefix: string;
  distribution: string;
  sourceKind: SourceKind;
  sources: PublicationSource[];
  architectures: string[];
  origin: string;
  label: string;
  skipSigning: boolean;
  liveGeneration: number | null;
  /** Path under /apt/ of the distribution's directory. */
  path: string;
  createdAt: string;
  updatedAt: string;
  history?: GenerationJson[];
}

/** `/apt/` path of a prefix: `.` is the root. */
export function aptPath(prefix: string, dist: string): string {
  return prefix === "." ? `dists/${dist}` : `${prefix}/dists/${dist}`;
}

export function toGenerationJson(row: GenerationRow): GenerationJson {
  return {
    generation: row.generation,
    state: row.state,
    sources: JSON.parse(row.sources) as unknown,
    packageCount: row.package_count,
    releaseSha256: row.release_sha256,
    taskId: row.task_id,
    error: row.error,
    createdAt: new Date(row.created_at).toISOString(),
    liveAt: row.live_at === null ? null : new Date(row.live_at).toISOString(),
  };
}

export function toPublicationJson(row: PublicationRow, history?: GenerationRow[]): PublicationJson {
  return {
    prefix: row.prefix,
    distribution: row.distribution,
    sourceKind: row.source_kind as SourceKind,
    sources: JSON.parse(row.sources) as PublicationSource[],
    architectures: JSON.parse(row.architectures) as string[],
    origin: row.origin,
    label: row.label,
    skipSigning: row.skip_signing === 1,
    liveGeneration: row.live_generation,
    path: aptPath(row.prefix, row.distribution),
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
    ...(history ? { history: history.map(toGenerationJson) } : {}),
  };
}

export interface PublicationSpec {
  prefix: string;
  distribution: string;
  sourceKind: SourceKind;
  sources: PublicationSource[];
  architectures?: string[];
  origin?: string;
  label?: string;
  skipSigning?: boolean;
}

/** Checks a publication request before any task is queued for it. */
export function validatePublicationSpec(spec: PublicationSpec): void {
  assertPrefix(spec.prefix);
  assertDistPart(spec.distribution, "distribution");
  if (spec.sources.length === 0)
    throw new KilnError("VALIDATION_FAILED", "a publication needs at least one source");
  const components = new Set<string>();
  for (const s of spec.sources) {
    assertDistPart(s.component, "component");
    assertRepoName(
      s.name,
      spec.sourceKind === "tag" ? "tag" : spec.sourceKind === "local" ? "repository" : "snapshot",
    );
    if (components.has(s.component)) {
      throw new KilnError("VALIDATION_FAILED", `component "${s.component}" is named twice`);
    }
    components.add(s.component);
  }
  assertArchitectures(spec.architectures ?? []);
  for (const text of [spec.origin, spec.label]) {
    if (text !== undefined && /[\n\r]/.test(text)) {
      throw new KilnError("VALIDATION_FAILED", "origin and label are one line each");
    }
  }
}

export async function findPublication(
  db: Kysely<Database>,
  prefix: string,
  distribution: string,
): Promise<PublicationRow | undefined> {
  return db
    .selectFrom("publications")
    .selectAll()
    .where("prefix", "=", prefix)
    .where("distribution", "=", distribution)
    .executeTakeFirst();
}

export async function getPublication(
  db: Kysely<Database>,
  prefix: string,
  distribution: string,
): Promise<PublicationRow> {
  const row = await findPublication(db, prefix, distribution);
  if (!row) {
    throw new KilnError(
      "PUBLICATION_NOT_FOUND",
      `nothing is published at prefix "${prefix}" distribution "${distribution}"; \`kiln publish list\` shows what is`,
      { prefix, distribution },
    );
  }
  return row;
}

export async function listPublications(db: Kysely<Database>): Promise<PublicationRow[]> {
  return db.selectFrom("publications").selectAll().orderBy("prefix").orderBy("distribution").execute();
}

export async function generationHistory(
  db: Kysely<Database>,
  publicationId: number,
): Promise<GenerationRow[]> {
  return db
    .selectFrom("publication_generations")
    .selectAll()
    .where("publication_id", "=", publicationId)
    .orderBy("generation", "desc")
    .execute();
}

export async function getGeneration(
  db: Kysely<Database>,
  publicationId: number,
  generation: number,
): Promise<GenerationRow | undefined> {
  return db
    .selectFrom("publication_generations")
    .selectAll()
    .where("publication_id", "=", publicationId)
    .where("generation", "=", generation)
    .executeTakeFirst();
}

export async function insertPublication(
  trx: Kysely<Database>,
  spec: PublicationSpec,
  now: number,
): Promise<PublicationRow> {
  const existing = await findPublication(trx, spec.prefix, spec.distribution);
  if (existing) {
    throw new KilnError(
      "PUBLICATION_EXISTS",
      `prefix "${spec.prefix}" distribution "${spec.distribution}" is already published; use \`kiln publish update\` or \`switch\`, or drop it first`,
      { prefix: spec.prefix, distribution: spec.distribution },
    );
  }
  return trx
    .insertInto("publications")
    .values({
      prefix: spec.prefix,
      distribution: spec.distribution,
      source_kind: spec.sourceKind,
      sources: JSON.stringify(spec.sources),
      architectures: JSON.stringify(spec.architectures ?? []),
      origin: spec.origin ?? "",
      label: spec.label ?? "",
      skip_signing: spec.skipSigning ? 1 : 0,
      live_generation: null,
      next_generation: 1,
      created_at: now,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}
