/**
 * The task methods of tag repos (Koji's newRepo and waitrepo), both run on the hub:
 * - `newRepo {tag}`: makes a new repo of the tag if its latest builds changed; queued by
 *   queueNewRepo (deduplicated) with the exclusive lock `tagrepo:<tag>`.
 * - `waitRepo {tag, builds, timeoutS?}`: closes with the ready repo once it holds every build
 *   (ids); fails with TAG_REPO_TIMEOUT after `timeoutS` (default 30 min) from its creation. Give
 *   the task a `timeout` above `timeoutS` to wait longer than the engine's default for a task.
 */
import { KilnError } from "../errors/catalogue.js";
import { registerMethod } from "../tasks/methods.js";
import { TAG_NAME_RE } from "./tag-store.js";

export const WAIT_REPO_DEFAULT_S = 30 * 60;
const WAIT_REPO_MAX_S = 7 * 24 * 3600;
const WAIT_REPO_MAX_BUILDS = 1000;

export interface WaitRepoArgs {
  tag: string;
  builds: number[];
  timeoutS: number;
}

function objectArgs(name: string, args: unknown): Record<string, unknown> {
  if (typeof args !== "object" || args === null || Array.isArray(args)) {
    throw new KilnError("VALIDATION_FAILED", `${name}: args must be an object`);
  }
  return args as Record<string, unknown>;
}

function tagArg(name: string, a: Record<string, unknown>): string {
  if (typeof a.tag !== "string" || !TAG_NAME_RE.test(a.tag)) {
    throw new KilnError("VALIDATION_FAILED", `${name}: tag must be a tag name`);
  }
  return a.tag;
}

export function parseNewRepoArgs(args: unknown): { tag: string } {
  return { tag: tagArg("newRepo", objectArgs("newRepo", args)) };
}

export function parseWaitRepoArgs(args: unknown): WaitRepoArgs {
  const a = objectArgs("waitRepo", args);
  const tag = tagArg("waitRepo", a);
  const builds = a.builds ?? [];
  if (
    !Array.isArray(builds) ||
    builds.length > WAIT_REPO_MAX_BUILDS ||
    !builds.every((b) => Number.isSafeInteger(b) && (b as number) > 0)
  ) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `waitRepo: builds must be a list of at most ${WAIT_REPO_MAX_BUILDS} build ids`,
    );
  }
  const timeoutS = a.timeoutS ?? WAIT_REPO_DEFAULT_S;
  if (typeof timeoutS !== "number" || !(timeoutS > 0 && timeoutS <= WAIT_REPO_MAX_S)) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `waitRepo: timeoutS must be a number of seconds above 0 and at most ${WAIT_REPO_MAX_S}`,
    );
  }
  return { tag, builds: [...new Set(builds as number[])], timeoutS };
}

registerMethod({
  name: "newRepo",
  channel: "hub",
  arch: "noarch",
  weight: 0.1,
  adminOnly: false,
  // Queued through queueNewRepo (POST /tags/:name/repo, the tracker), which deduplicates.
  userCreatable: false,
  validateArgs: parseNewRepoArgs,
});

registerMethod({
  name: "waitRepo",
  channel: "hub",
  arch: "noarch",
  weight: 0.1,
  adminOnly: false,
  // `kiln wait-repo` creates it through POST /tasks; chain builds as a subtask.
  userCreatable: true,
  validateArgs: (args) => ({ ...parseWaitRepoArgs(args) }),
});
