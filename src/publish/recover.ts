import { readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Db } from "../db/database.js";

/** How applyPublication names a staging directory: `<dist>-<generation>-<12 hex digits>`. */
const STAGING_TAIL_RE = /^[0-9a-f]{12}$/;

/**
 * After a crash: generations left `staged` by a task that is no longer running failed (their
 * task, requeued, makes a new one), and staging directories nobody writes any more go. The live
 * publication was never touched by them.
 */
export async function recoverInterruptedPublishes(db: Db, stagingDir: string, now: number): Promise<void> {
  const k = db.kysely;
  const staged = await k
    .selectFrom("publication_generations")
    .leftJoin("tasks", "tasks.id", "publication_generations.task_id")
    .select(["publication_generations.id as id", "tasks.state as task_state"])
    .where("publication_generations.state", "=", "staged")
    .execute();
  const dead = staged.filter(
    (g) => g.task_state === null || !["free", "assigned", "open"].includes(g.task_state),
  );
  if (dead.length > 0) {
    await k
      .updateTable("publication_generations")
      .set({ state: "failed", error: "interrupted: the hub stopped while it was being made" })
      .where(
        "id",
        "in",
        dead.map((g) => g.id),
      )
      .execute();
  }
  // Staging directories of other live hubs (PostgreSQL) are young; an hour is far beyond any.
  for (const name of await readdir(stagingDir).catch(() => [] as string[])) {
    const full = path.join(stagingDir, name);
    const st = await stat(full).catch(() => undefined);
    if (st && now - st.mtimeMs > 3_600_000) await rm(full, { recursive: true, force: true });
  }
}

/**
 * Removes the staging directories of a publication's generations that a crash cut off (their
 * task, requeued, found them still `staged`). Staging names carry no prefix, so a directory of
 * another prefix's publication of the same distribution and generation, still being written,
 * looks the same: such names are left to the hourly sweep above.
 */
export async function removeInterruptedStaging(
  db: Db,
  stagingDir: string,
  publication: { id: number; distribution: string },
  generations: readonly number[],
): Promise<void> {
  if (generations.length === 0) return;
  // Listed before the rows are read: a publish whose directory is listed has its row already.
  const names = await readdir(stagingDir).catch(() => [] as string[]);
  const busy = await db.kysely
    .selectFrom("publication_generations")
    .innerJoin("publications", "publications.id", "publication_generations.publication_id")
    .select("publication_generations.generation")
    .where("publications.distribution", "=", publication.distribution)
    .where("publications.id", "<>", publication.id)
    .where("publication_generations.state", "=", "staged")
    .where("publication_generations.generation", "in", [...generations])
    .execute();
  const busyGenerations = new Set(busy.map((b) => b.generation));
  for (const g of generations) {
    if (busyGenerations.has(g)) continue;
    const head = `${publication.distribution}-${g}-`;
    for (const name of names) {
      if (name.startsWith(head) && STAGING_TAIL_RE.test(name.slice(head.length))) {
        await rm(path.join(stagingDir, name), { recursive: true, force: true });
      }
    }
  }
}
