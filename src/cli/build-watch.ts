/** Waiting for a build to finish, showing each architecture's state; explaining a failure. */
import { setTimeout as sleep } from "node:timers/promises";
import type { KilnClient } from "../client/client.js";
import { readSse } from "../client/sse.js";
import type { BuildJson, BuildPublicationJson, TaskDetailJson, TaskJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { waitForRelease } from "./publish-wait.js";
import { isFinal } from "../tasks/types.js";
import { Spinner, type TextSink } from "./output.js";
import { isTransient } from "./task-watch.js";

export interface BuildWatchResult {
  build: BuildJson;
  /** The build's top task, as it ended. */
  task: TaskDetailJson;
  /** The build is complete and its task closed (imported, and tagged unless scratch). */
  ok: boolean;
}

/** `hello/1.0-1: amd64 open, arm64 free` — or what happens before and after the arches run. */
export function describeBuildProgress(build: BuildJson, task: TaskJson): string {
  const head = `${build.nvr}${build.scratch ? " (scratch)" : ""}`;
  if (build.arches.length === 0) {
    return isFinal(task.state)
      ? `${head}: ${build.state}`
      : `${head}: building the source package (task ${task.id} ${task.state})`;
  }
  const arches = build.arches.map((a) => `${a.arch} ${a.state}`).join(", ");
  if (!isFinal(task.state) && build.arches.every((a) => isFinal(a.state))) {
    return `${head}: ${arches}; ${build.scratch ? "importing" : "importing and tagging"}`;
  }
  return `${head}: ${arches}`;
}

/** The longest timer Node allows: the stream lives as long as the task. */
const NO_TIMEOUT = 2_147_483_647;

/**
 * Follows the task's log stream, calling `onEvent` for each of its events (a log chunk, the
 * end): the task did something, so the watcher should look now rather than at its next poll.
 * Only a hint — when the stream fails or the hub has none, polling alone goes on.
 */
async function followHints(
  client: KilnClient,
  taskId: number,
  signal: AbortSignal,
  onEvent: () => void,
): Promise<void> {
  try {
    const res = await client.raw("GET", `/api/v1/tasks/${taskId}/logs?follow=1`, undefined, {
      headers: { accept: "text/event-stream" },
      signal,
      timeoutMs: NO_TIMEOUT,
    });
    if (!res.body) return;
    for await (const event of readSse(res.body)) {
      onEvent();
      if (event.event === "end") return;
    }
  } catch {
    // A hint lost; the polls still come.
  }
}

/**
 * Polls the build and its task until the task has ended (so a non-scratch build is tagged by
 * then, not merely complete). Hub restarts and proxy hiccups are waited out. The task's log
 * stream wakes the poll early, so the end is seen as it happens, not up to a poll later.
 */
export async function watchBuild(
  client: KilnClient,
  buildId: number,
  taskId: number,
  opts: { intervalMs?: number; spinner?: Spinner } = {},
): Promise<BuildWatchResult> {
  const spinner = opts.spinner ?? new Spinner();
  const interval = opts.intervalMs ?? 200;
  let last: { build: BuildJson; task: TaskDetailJson } | undefined;
  // The build's row follows its task in the same transaction; a few polls of grace suffice.
  let graceAfterTask = 4;
  let hinted = false;
  let wake: (() => void) | undefined;
  const stopHints = new AbortController();
  const hints = followHints(client, taskId, stopHints.signal, () => {
    hinted = true;
    wake?.();
  });
  /** Waits `ms`, or less when a hint comes meanwhile. */
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      if (hinted) {
        hinted = false;
        return resolve();
      }
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = undefined;
        hinted = false;
        resolve();
      }
      wake = done;
    });
  try {
    for (;;) {
      try {
        const [build, task] = await Promise.all([client.getBuild(buildId), client.getTask(taskId)]);
        last = { build, task };
      } catch (err) {
        if (!isTransient(err) || last === undefined) throw err;
        spinner.update(`lost the hub (${(err as Error).message}); still trying…`);
        await sleep(interval * 2);
        continue;
      }
      spinner.update(describeBuildProgress(last.build, last.task));
      if (isFinal(last.task.state) && (last.build.state !== "building" || --graceAfterTask <= 0)) break;
      await pause(interval);
    }
  } finally {
    stopHints.abort();
    await hints;
    spinner.stop();
  }
  const { build, task } = last;
  return { build, task, ok: build.state === "complete" && task.state === "closed" };
}

/**
 * Returns once the build's packages can be installed from every publication that tracks a tag
 * the build is in: the hub republishes such tags by itself; this waits until each one's live
 * generation was made after the tagging and its new Release is being served. A build in no
 * published tag returns at once.
 */
export async function waitUntilServed(
  client: KilnClient,
  build: BuildJson,
  opts: { timeoutMs?: number; intervalMs?: number; out?: TextSink } = {},
): Promise<BuildPublicationJson[]> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10 * 60_000);
  let pubs = await client.buildPublications(build.id);
  if (pubs.length === 0) return pubs;
  const spinner = new Spinner({ out: opts.out });
  try {
    while (pubs.some((p) => !p.ready)) {
      const waiting = pubs.filter((p) => !p.ready).map(publicationLabel);
      spinner.update(`${build.nvr}: waiting for the hub to republish ${waiting.join(", ")}`);
      if (Date.now() > deadline) {
        throw new KilnError(
          "PUBLISH_NOT_SERVED",
          `${build.nvr} built, but ${waiting.join(", ")} has not been republished with it; \`kiln publish show\` tells why`,
        );
      }
      await sleep(opts.intervalMs ?? 200);
      pubs = await client.buildPublications(build.id);
    }
    for (const p of pubs) {
      await waitForRelease(client.hub, { path: p.path, releaseSha256: p.releaseSha256 }, { spinner });
    }
  } finally {
    spinner.stop();
  }
  return pubs;
}

function publicationLabel(p: BuildPublicationJson): string {
  return `${p.prefix === "." ? "" : `${p.prefix}/`}${p.distribution}`;
}

/** The last `n` lines of a text (a trailing newline does not count as a line). */
export function lastLines(text: string, n: number): string[] {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines.slice(-n);
}

/** The task to blame for a failed build: a failed arch, else a failed subtask, else the build task. */
export function findCulprit(
  build: BuildJson,
  task: TaskJson,
  subtasks: readonly TaskJson[],
): { taskId: number; what: string } {
  const arch =
    build.arches.find((a) => a.state === "failed") ?? build.arches.find((a) => a.state === "canceled");
  if (arch)
    return { taskId: arch.taskId, what: `the ${arch.arch} build (task ${arch.taskId}) ${arch.state}` };
  const sub = subtasks.find((t) => t.state === "failed") ?? subtasks.find((t) => t.state === "canceled");
  if (sub) return { taskId: sub.id, what: `${sub.label ?? sub.method} (task ${sub.id}) ${sub.state}` };
  return { taskId: task.id, what: `the build task (${task.id}) ${task.state}` };
}

/** Says why a build failed on stderr: the task's error, the culprit's id and the end of its log. */
export async function reportBuildFailure(
  client: KilnClient,
  result: BuildWatchResult,
  opts: { lines?: number; err?: TextSink } = {},
): Promise<void> {
  const err = opts.err ?? process.stderr;
  const { build, task } = result;
  const why = task.error ? `: ${task.error.message} [${task.error.code}]` : "";
  const state =
    build.state === "complete"
      ? `was built, but its task ${task.state}` // e.g. tagging it failed
      : build.state === "building"
        ? task.state
        : build.state;
  err.write(`build ${build.nvr} ${state}${why}\n`);
  let subtasks: TaskJson[] = [];
  try {
    subtasks = (await client.listTasks({ parent: task.id, limit: 1000 })).tasks;
  } catch (e) {
    if (!isTransient(e)) throw e;
  }
  const culprit = findCulprit(build, task, subtasks);
  let log = "";
  try {
    log = await client.taskLog(culprit.taskId);
  } catch (e) {
    if (!isTransient(e)) throw e;
  }
  const tail = lastLines(log, opts.lines ?? 30);
  err.write(
    tail.length > 0 ? `${culprit.what}; the end of its log:\n` : `${culprit.what}; its log is empty\n`,
  );
  for (const line of tail) err.write(`  ${line}\n`);
  err.write(`the whole log: kiln task logs ${culprit.taskId}\n`);
}
