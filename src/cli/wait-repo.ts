/**
 * Tag repos on the command line: `kiln tag repo`, `kiln tag regen-repo` (Koji's regen-repo) and
 * `kiln wait-repo` (Koji's wait-repo), which waits through a `waitRepo` task on the hub.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { tagRepoSourcesLine } from "../builds/tag-repo-layout.js";
import type { KilnClient } from "../client/client.js";
import type { TagRepoJson, TaskDetailJson, TaskError } from "../client/types.js";
import { isErrorCode, KilnError, type ErrorCode } from "../errors/catalogue.js";
import { isFinal } from "../tasks/types.js";
import { parseNvr } from "./build.js";
import { clientFor, parseNumber } from "./context.js";
import { formatFields, formatTime, printJson, Spinner } from "./output.js";
import { KEYRING_PATH, keyringCommand } from "./publish-wait.js";
import { isTransient } from "./task-watch.js";

interface JsonFlag {
  json?: boolean;
}

/** The wait `kiln wait-repo` asks for unless --timeout says otherwise (the waitRepo default). */
export const WAIT_REPO_TIMEOUT_S = 30 * 60;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** What `kiln tag repo` prints: the repo, its builds, and what apt needs to use it. */
export function formatTagRepo(repo: TagRepoJson, hub: string, now: number = Date.now()): string {
  const url = `${hub.replace(/\/+$/, "")}${repo.path}`;
  const fields = formatFields([
    ["repo", `${repo.id} (${repo.state})`],
    ["tag", repo.tag],
    ["event", repo.eventId],
    ["builds", repo.builds.length],
    ["packages", repo.packageCount],
    ["created", formatTime(repo.createdAt, now)],
    ["ready", formatTime(repo.readyAt, now)],
    ["expired", formatTime(repo.expiredAt, now)],
    ["task", repo.taskId],
    ["url", url],
    ["apt source", tagRepoSourcesLine(hub, repo, KEYRING_PATH)],
    ["archive key", keyringCommand(hub)],
  ]);
  const builds = repo.builds.map((b) => `  ${b.nvr}\n`).join("");
  return `${fields}${builds ? `builds:\n${builds}` : ""}`;
}

/** The error a failed task ended with, with its own code when the catalogue has it. */
function taskError(task: TaskDetailJson, fallback: ErrorCode, what: string): KilnError {
  const err: TaskError | null = task.error;
  if (task.state === "canceled")
    return new KilnError("TASK_CANCELED", `${what}: task ${task.id} was canceled`);
  const code = err && isErrorCode(err.code) ? err.code : fallback;
  return new KilnError(code, `${what}: ${err?.message ?? `task ${task.id} ${task.state}`}`, {
    task: task.id,
  });
}

/** Polls a task until it ends, the spinner saying `label`; a hub restart only pauses the wait. */
async function waitTask(
  client: KilnClient,
  id: number,
  spinner: Spinner,
  label: string,
): Promise<TaskDetailJson> {
  for (;;) {
    let task: TaskDetailJson;
    try {
      task = await client.getTask(id);
    } catch (err) {
      if (!isTransient(err)) throw err;
      spinner.update(`lost the hub (${(err as Error).message}); still trying…`);
      await sleep(1000);
      continue;
    }
    if (isFinal(task.state)) return task;
    spinner.update(label);
    await sleep(500);
  }
}

/** The ids of the builds named SOURCE/VERSION; warns about those not among the tag's latest. */
async function resolveBuilds(client: KilnClient, tag: string, nvrs: readonly string[]): Promise<number[]> {
  const latest = await client.latestBuilds(tag);
  if (nvrs.length === 0) return latest.map((b) => b.buildId);
  const ids: number[] = [];
  for (const nvr of nvrs) {
    const build = await client.getBuild(nvr);
    ids.push(build.id);
    if (latest.some((b) => b.buildId === build.id)) continue;
    const newest = latest.find((b) => b.source === build.source);
    // Koji's wait-repo warns and waits all the same: the build may be about to be tagged.
    process.stderr.write(
      `warning: ${nvr} is not among ${tag}'s latest builds (${newest ? `its latest ${build.source} is ${newest.nvr}` : `it has no ${build.source}`}); waiting anyway\n`,
    );
  }
  return ids;
}

async function waitRepo(
  client: KilnClient,
  tag: string,
  opts: JsonFlag & { build?: string[]; timeout?: number },
): Promise<void> {
  await client.getTag(tag);
  const builds = await resolveBuilds(client, tag, opts.build ?? []);
  const timeoutS = opts.timeout ?? WAIT_REPO_TIMEOUT_S;
  const task = await client.createTask({
    method: "waitRepo",
    args: { tag, builds, timeoutS },
    // The task outlives its wait by a little, so it ends with TAG_REPO_TIMEOUT, not the engine's.
    timeout: Math.ceil(timeoutS) + 60,
  });
  // Ctrl-C ends the wait on the hub too.
  const onInterrupt = () => {
    void client
      .cancelTask(task.id)
      .catch(() => undefined)
      .finally(() => process.exit(130));
  };
  process.once("SIGINT", onInterrupt);
  const spinner = new Spinner();
  const what = opts.build?.length ? opts.build.join(", ") : plural(builds.length, "latest build");
  let done: TaskDetailJson;
  try {
    done = await waitTask(
      client,
      task.id,
      spinner,
      `waiting for a repo of ${tag} holding ${what} (task ${task.id})`,
    );
  } finally {
    spinner.stop();
    process.off("SIGINT", onInterrupt);
  }
  if (done.state !== "closed") throw taskError(done, "TAG_REPO_TIMEOUT", `waiting for a repo of ${tag}`);
  const repo = done.result as TagRepoJson;
  if (opts.json) return printJson(repo);
  process.stdout.write(
    `Repo ${repo.id} of ${tag} (event ${repo.eventId}) holds ${what}: ${client.hub}${repo.path}\n`,
  );
}

async function regenRepo(
  client: KilnClient,
  tag: string,
  opts: JsonFlag & { nowait?: boolean },
): Promise<void> {
  const { task } = await client.regenTagRepo(tag);
  if (opts.nowait) {
    if (opts.json) return printJson({ task });
    process.stdout.write(
      `Queued task ${task.id} (newRepo) for ${tag}; \`kiln task show ${task.id}\` follows it\n`,
    );
    return;
  }
  const spinner = new Spinner();
  let done: TaskDetailJson;
  try {
    done = await waitTask(client, task.id, spinner, `making a repo of ${tag} (task ${task.id})`);
  } finally {
    spinner.stop();
  }
  if (done.state !== "closed") throw taskError(done, "TAG_REPO_FAILED", `making a repo of ${tag} failed`);
  const repo = done.result as TagRepoJson;
  if (opts.json) return printJson(repo);
  process.stdout.write(
    repo.unchanged
      ? `Repo ${repo.id} of ${tag} is current: the tag's latest builds have not changed since event ${repo.eventId}\n`
      : `Repo ${repo.id} of ${tag} is ready (event ${repo.eventId}, ${plural(repo.builds.length, "build")}, ${plural(repo.packageCount, "package")})\n`,
  );
  process.stdout.write(`apt source:  ${tagRepoSourcesLine(client.hub, repo, KEYRING_PATH)}\n`);
}

function collectNvr(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), parseNvr(value)];
}

/** `kiln tag repo` and `kiln tag regen-repo`, under `kiln tag`. */
export function registerTagRepoCommands(tag: Command): void {
  tag
    .command("repo")
    .description("Show the tag's current repository (what builds install Build-Depends from)")
    .argument("<tag>", "the tag")
    .option("--json", "print as JSON")
    .action(async (name: string, opts: JsonFlag, cmd: Command) => {
      const client = clientFor(cmd);
      const repo = await client.getTagRepo(name);
      if (opts.json) return printJson(repo);
      process.stdout.write(formatTagRepo(repo, client.hub));
    });

  tag
    .command("regen-repo")
    .description("Make a new repository of the tag now, if its latest builds changed")
    .argument("<tag>", "the tag")
    .option("--nowait", "queue the newRepo task, print its id and return")
    .option("--json", "print the repo (with --nowait, the task) as JSON")
    .action(async (name: string, opts: JsonFlag & { nowait?: boolean }, cmd: Command) => {
      await regenRepo(clientFor(cmd), name, opts);
    });
}

/** `kiln wait-repo`: top-level, as in Koji. */
export function registerWaitRepoCommand(program: Command): void {
  program
    .command("wait-repo")
    .description("Wait until a ready repository of the tag holds the builds (by default: its latest)")
    .argument("<tag>", "the tag (a target's build tag)")
    .option("--build <source/version>", "a build the repo must hold (repeatable)", collectNvr)
    .option(
      "--timeout <seconds>",
      `give up after this long (default ${WAIT_REPO_TIMEOUT_S})`,
      parseNumber(1, 7 * 24 * 3600),
    )
    .option("--json", "print the repo as JSON")
    .action(async (name: string, opts: JsonFlag & { build?: string[]; timeout?: number }, cmd: Command) => {
      await waitRepo(clientFor(cmd), name, opts);
    });
}
