/**
 * Chain builds, the pure part: what a `chainBuild` task holds, its subtasks' labels, whether a
 * target can chain at all, and the report of where a chain stands — computed from the task's args
 * and its subtasks alone, so the handler, the API and the CLI all tell the same story.
 */
import type { TaskError, TaskJson, TaskState } from "../tasks/types.js";
import { isFinal } from "../tasks/types.js";
import { passesFilters, type InheritanceEntry } from "./inheritance.js";

/** The most builds one chain may hold (every source is read when the chain is submitted). */
export const MAX_CHAIN_BUILDS = 100;

/** One build of a chain, checked when the chain was submitted. */
export interface ChainEntry {
  source: string;
  version: string;
  upload: string;
  input: { type: "tarball" | "dsc"; file: string };
}

/** The `chainBuild` task's args: the target as it was resolved at submission, and the groups. */
export interface ChainBuildArgs {
  target: { id: number; name: string; buildTag: string; destTag: string };
  groups: ChainEntry[][];
}

/** Labels of a chain's subtasks; groups and builds are numbered from 1, as users see them. */
export function buildLabel(group: number, index: number): string {
  return `build-${group}-${index}`;
}

export function repoLabel(group: number): string {
  return `repo-${group}`;
}

export function nvrOf(e: { source: string; version: string }): string {
  return `${e.source}/${e.version}`;
}

/**
 * The package filters met on each inheritance path from the build tag to the destination tag
 * (one empty list when they are the same tag), or an empty array when the build tag does not
 * inherit the destination tag at all: then no build of one group could ever reach the next.
 */
export function pathsToDest(
  walk: readonly InheritanceEntry[],
  buildTagId: number,
  destTagId: number,
): (readonly string[])[] {
  if (buildTagId === destTagId) return [[]];
  return walk.filter((e) => e.parentId === destTagId).map((e) => e.filters);
}

/** Does some path let this package's builds in the destination tag through to the build tag? */
export function visibleThrough(paths: readonly (readonly string[])[], pkg: string): boolean {
  return paths.some((filters) => passesFilters(pkg, filters));
}

/** SOURCE/VERSIONs named more than once in the chain. */
export function duplicateNvrs(groups: readonly (readonly ChainEntry[])[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const e of groups.flat()) {
    const nvr = nvrOf(e);
    if (seen.has(nvr)) twice.add(nvr);
    seen.add(nvr);
  }
  return [...twice];
}

export type ChainEntryState = "complete" | "building" | "failed" | "canceled" | "not started";

export interface ChainEntryJson {
  group: number;
  index: number;
  nvr: string;
  buildId: number | null;
  taskId: number | null;
  state: ChainEntryState;
  error: TaskError | null;
}

export interface ChainRepoWaitJson {
  /** The group whose builds the build tag's repo was awaited for. */
  group: number;
  taskId: number;
  state: TaskState;
  error: TaskError | null;
}

export interface ChainReport {
  groups: number;
  builds: ChainEntryJson[];
  repoWaits: ChainRepoWaitJson[];
  /** The group the chain is at and what it does there; null before it starts and once it ended. */
  current: { group: number; phase: "building" | "waiting for the repo" } | null;
}

function entryState(task: TaskJson | undefined): ChainEntryState {
  if (!task) return "not started";
  switch (task.state) {
    case "closed":
      return "complete";
    case "failed":
      return "failed";
    case "canceled":
      return "canceled";
    case "free":
    case "assigned":
    case "open":
      return "building";
  }
}

/** Where the chain stands, from its args and its subtasks (found by label). */
export function chainReport(
  args: ChainBuildArgs,
  subtasks: readonly TaskJson[],
  chainState?: TaskState,
): ChainReport {
  const byLabel = new Map(subtasks.filter((t) => t.label !== null).map((t) => [t.label!, t]));
  const builds = args.groups.flatMap((group, g) =>
    group.map((e, j): ChainEntryJson => {
      const task = byLabel.get(buildLabel(g + 1, j + 1));
      return {
        group: g + 1,
        index: j + 1,
        nvr: nvrOf(e),
        buildId: task ? (task.args as { buildId: number }).buildId : null,
        taskId: task?.id ?? null,
        state: entryState(task),
        error: task?.error ?? null,
      };
    }),
  );
  const repoWaits: ChainRepoWaitJson[] = [];
  for (let g = 1; g < args.groups.length; g++) {
    const task = byLabel.get(repoLabel(g));
    if (task) repoWaits.push({ group: g, taskId: task.id, state: task.state, error: task.error });
  }
  return {
    groups: args.groups.length,
    builds,
    repoWaits,
    current: currentStep(builds, repoWaits, chainState),
  };
}

function currentStep(
  builds: readonly ChainEntryJson[],
  repoWaits: readonly ChainRepoWaitJson[],
  chainState: TaskState | undefined,
): ChainReport["current"] {
  if (chainState !== undefined && isFinal(chainState)) return null;
  const started = builds.filter((b) => b.state !== "not started");
  const group = Math.max(0, ...started.map((b) => b.group));
  if (group === 0) return null;
  const wait = repoWaits.find((w) => w.group === group);
  return { group, phase: wait && !isFinal(wait.state) ? "waiting for the repo" : "building" };
}

function list(entries: readonly ChainEntryJson[]): string {
  return entries.map((e) => e.nvr).join(", ");
}

/**
 * One paragraph saying what built and what did not, after `headline` (why the chain stopped):
 * the failed builds with their errors, then the built, canceled and never started ones.
 */
export function describeChainStop(report: ChainReport, headline: string): string {
  const failed = report.builds.filter((b) => b.state === "failed");
  const parts = [headline];
  for (const b of failed) {
    parts.push(`${b.nvr} failed${b.error ? ` (${b.error.code}: ${b.error.message})` : ""}`);
  }
  const of = (state: ChainEntryState) => report.builds.filter((b) => b.state === state);
  const [built, canceled, never] = [of("complete"), of("canceled"), of("not started")];
  if (built.length > 0) parts.push(`built: ${list(built)}`);
  if (canceled.length > 0) parts.push(`canceled: ${list(canceled)}`);
  if (never.length > 0) parts.push(`never started: ${list(never)}`);
  return parts.join("; ");
}

/** What a chain that ended well returns: every build, in chain order. */
export function chainResult(report: ChainReport): {
  builds: { buildId: number | null; nvr: string; group: number; state: ChainEntryState }[];
} {
  return {
    builds: report.builds.map((b) => ({ buildId: b.buildId, nvr: b.nvr, group: b.group, state: b.state })),
  };
}
