import { latestInTag } from "../builds/tag-store.js";
import type { Db } from "../db/database.js";
import { aptPath, type PublicationSource } from "./publication-store.js";

export interface BuildPublicationJson {
  prefix: string;
  distribution: string;
  /** Under /apt/: where the Release is served. */
  path: string;
  tag: string;
  /** The live generation was made after the build was tagged, so apt can see the build. */
  ready: boolean;
  generation: number | null;
  releaseSha256: string | null;
}

/**
 * The publications tracking a tag whose latest builds include this one (through inheritance),
 * and for each whether its live generation reflects the tagging yet — what `kiln build` waits
 * for before saying the build is installable.
 */
export async function publicationsOfBuild(
  deps: { db: Db; clock: { now(): number } },
  buildId: number,
): Promise<BuildPublicationJson[]> {
  const db = deps.db.kysely;
  const tagged = await db
    .selectFrom("build_tags")
    .select((eb) => eb.fn.max<number>("create_event").as("event"))
    .where("build_id", "=", buildId)
    .where("revoke_event", "is", null)
    .executeTakeFirst();
  const taggedEvent = tagged?.event == null ? undefined : Number(tagged.event);
  if (taggedEvent === undefined) return [];
  const pubs = await db.selectFrom("publications").selectAll().where("source_kind", "=", "tag").execute();
  const out: BuildPublicationJson[] = [];
  for (const p of pubs) {
    for (const s of JSON.parse(p.sources) as PublicationSource[]) {
      const latest = await latestInTag(deps, s.name).catch(() => []);
      if (!latest.some((b) => b.buildId === buildId)) continue;
      const live =
        p.live_generation === null
          ? undefined
          : await db
              .selectFrom("publication_generations")
              .selectAll()
              .where("publication_id", "=", p.id)
              .where("generation", "=", p.live_generation)
              .executeTakeFirst();
      const recorded = live
        ? (JSON.parse(live.sources) as { sources?: { tag?: string; event?: number }[] }).sources
        : undefined;
      const event = recorded?.find((r) => r.tag === s.name)?.event;
      out.push({
        prefix: p.prefix,
        distribution: p.distribution,
        path: aptPath(p.prefix, p.distribution),
        tag: s.name,
        ready: event !== undefined && event >= taggedEvent,
        generation: live?.generation ?? null,
        releaseSha256: live?.release_sha256 ?? null,
      });
    }
  }
  return out;
}
