import { KilnError } from "../errors/catalogue.js";
import { registerMethod } from "../tasks/methods.js";
import type { LockSpec } from "../tasks/types.js";

/**
 * Every change to repos, snapshots and publications is a hub-side task holding resource locks:
 * `repo:NAME` and `snapshot:NAME` for contents, `publish:PREFIX/DIST` for a distribution's
 * generations and `pool:PREFIX` (shared while publishing, exclusive for collecting). Conflicting
 * work waits its turn in arrival order; unrelated work runs side by side.
 */
export const REPO_METHODS = [
  "repoAdd",
  "repoRemove",
  "repoAddKeys",
  "repoRemoveKeys",
  "repoCopy",
  "repoImportTag",
  "repoDrop",
  "snapshotCreate",
  "snapshotDrop",
  "publishCreate",
  "publishUpdate",
  "publishSwitch",
  "publishRollback",
  "publishDrop",
] as const;
export type RepoMethod = (typeof REPO_METHODS)[number];

for (const name of REPO_METHODS) {
  registerMethod({
    name,
    channel: "hub",
    arch: "noarch",
    weight: 0.1,
    adminOnly: false,
    userCreatable: false,
    validateArgs(args) {
      if (typeof args !== "object" || args === null || Array.isArray(args)) {
        throw new KilnError("VALIDATION_FAILED", `${name}: args must be an object`);
      }
      return args as Record<string, unknown>;
    },
  });
}

export const repoLock = (name: string, exclusive = true): LockSpec => ({
  resource: `repo:${name}`,
  exclusive,
});
export const snapshotLock = (name: string, exclusive = true): LockSpec => ({
  resource: `snapshot:${name}`,
  exclusive,
});
export const publishLock = (prefix: string, dist: string): LockSpec => ({
  resource: `publish:${prefix}/${dist}`,
  exclusive: true,
});
export const poolLock = (prefix: string, exclusive = false): LockSpec => ({
  resource: `pool:${prefix}`,
  exclusive,
});

/**
 * `gc` (admin, queued by POST /api/v1/gc and the hub's timer, never through POST /tasks): it
 * sweeps the pools of the prefixes whose `pool:` lock it holds exclusive (see collect-garbage.ts).
 */
registerMethod({
  name: "gc",
  channel: "hub",
  arch: "noarch",
  weight: 0.1,
  adminOnly: true,
  userCreatable: false,
  validateArgs(args) {
    const a = (args ?? {}) as Record<string, unknown>;
    const age = a.minAgeSeconds;
    if (
      typeof a !== "object" ||
      Array.isArray(a) ||
      (a.dryRun !== undefined && typeof a.dryRun !== "boolean") ||
      (age !== undefined && (typeof age !== "number" || !Number.isInteger(age) || age < 0))
    ) {
      throw new KilnError(
        "VALIDATION_FAILED",
        "gc: args must be { dryRun?: boolean, minAgeSeconds?: integer >= 0 }",
      );
    }
    return { dryRun: a.dryRun === true, ...(age !== undefined ? { minAgeSeconds: age } : {}) };
  },
});
