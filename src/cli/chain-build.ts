/** `kiln chain-build` (Koji's chain-build) and `kiln chain-info`. */
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type { ChainBuildJson, ChainEntryJson, CreateChainBuildRequest } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { isFinal } from "../tasks/types.js";
import { uploadSource } from "./build.js";
import { reportBuildFailure } from "./build-watch.js";
import { CliExit, clientFor, parseId, parseInteger } from "./context.js";
import { formatTable, printJson, Spinner, type TextSink } from "./output.js";
import { checkSourceDir, classifySource } from "./source-pack.js";
import { isTransient } from "./task-watch.js";

/** Separates groups on the command line, as its own argument. */
export const GROUP_SEPARATOR = ":";

function usage(message: string): KilnError {
  return new KilnError("VALIDATION_FAILED", message);
}

/**
 * `A B : C` → [[A, B], [C]]. A `:` must stand between two groups: a leading or trailing one, or
 * two in a row, is a usage error saying which group is empty.
 */
export function parseChainGroups(args: readonly string[]): string[][] {
  const groups: string[][] = [[]];
  for (const arg of args) {
    if (arg === GROUP_SEPARATOR) groups.push([]);
    else groups[groups.length - 1]!.push(arg);
  }
  const empty = groups.findIndex((g) => g.length === 0);
  if (empty === -1) return groups;
  if (groups.length === 1) throw usage("name at least one source to build");
  const where =
    empty === 0
      ? `the chain starts with "${GROUP_SEPARATOR}"`
      : empty === groups.length - 1
        ? `the chain ends with "${GROUP_SEPARATOR}"`
        : `group ${empty + 1} is empty (two "${GROUP_SEPARATOR}" in a row)`;
  throw usage(
    `${where}; write the groups as SRC… ${GROUP_SEPARATOR} SRC…, with "${GROUP_SEPARATOR}" only between two groups`,
  );
}

/** Refuses, before anything is uploaded, a source that cannot be one (as `kiln build` would). */
async function precheckSource(arg: string): Promise<void> {
  const spec = classifySource(arg);
  if (spec.kind === "dir") await checkSourceDir(spec.path);
}

function builds(chain: ChainBuildJson, group: number): ChainEntryJson[] {
  return chain.builds.filter((b) => b.group === group);
}

/** The spinner's line: the group the chain is at, and how each of its builds stands. */
export function describeChainProgress(chain: ChainBuildJson): string {
  const head = `chain build ${chain.task.id}`;
  if (isFinal(chain.task.state)) return `${head}: ${chain.task.state}`;
  const at = chain.current;
  if (!at) return `${head}: ${chain.task.state === "free" ? "queued" : "starting"}`;
  const step = `${head}, group ${at.group}/${chain.groups}`;
  if (at.phase === "waiting for the repo") {
    return `${step}: built; waiting for ${chain.buildTag}'s repository to contain it`;
  }
  return `${step}: ${builds(chain, at.group)
    .map((b) => `${b.nvr} ${b.state}`)
    .join(", ")}`;
}

/** Every build of the chain: group, SOURCE/VERSION, build id, task, state, error. */
export function formatChainReport(chain: ChainBuildJson): string {
  return formatTable<ChainEntryJson>(chain.builds, [
    { header: "group", value: (b) => b.group, align: "right" },
    { header: "build", value: (b) => b.nvr },
    { header: "id", value: (b) => b.buildId, align: "right" },
    { header: "task", value: (b) => b.taskId, align: "right" },
    { header: "state", value: (b) => b.state },
    { header: "error", value: (b) => b.error?.code },
  ]);
}

/** Polls the chain until its task has ended, the progress on the spinner; hub hiccups are waited out. */
export async function watchChain(
  client: KilnClient,
  taskId: number,
  opts: { intervalMs?: number; spinner?: Spinner } = {},
): Promise<ChainBuildJson> {
  const spinner = opts.spinner ?? new Spinner();
  const interval = opts.intervalMs ?? 500;
  let last: ChainBuildJson | undefined;
  try {
    for (;;) {
      try {
        last = await client.getChainBuild(taskId);
      } catch (err) {
        if (!isTransient(err) || last === undefined) throw err;
        spinner.update(`lost the hub (${(err as Error).message}); still trying…`);
        await sleep(interval * 2);
        continue;
      }
      spinner.update(describeChainProgress(last));
      if (isFinal(last.task.state)) return last;
      await sleep(interval);
    }
  } finally {
    spinner.stop();
  }
}

/** Why the chain stopped, then for each failed build its error and the end of its log. */
export async function reportChainFailure(
  client: KilnClient,
  chain: ChainBuildJson,
  err: TextSink = process.stderr,
): Promise<void> {
  const why = chain.task.error ? `: ${chain.task.error.message} [${chain.task.error.code}]` : "";
  err.write(`chain build ${chain.task.id} ${chain.task.state}${why}\n`);
  for (const b of chain.builds.filter((x) => x.state === "failed")) {
    if (b.buildId === null || b.taskId === null) continue;
    const [build, task] = await Promise.all([client.getBuild(b.buildId), client.getTask(b.taskId)]);
    await reportBuildFailure(client, { build, task, ok: false }, { err });
  }
}

interface ChainFlags {
  nowait?: boolean;
  json?: boolean;
  priority?: number;
  force?: boolean;
}

async function submitChain(
  client: KilnClient,
  target: string,
  groups: string[][],
  flags: ChainFlags,
): Promise<ChainBuildJson> {
  for (const src of groups.flat()) await precheckSource(src);
  const spinner = new Spinner();
  try {
    const req: CreateChainBuildRequest = { target, groups: [] };
    for (const group of groups) {
      const uploaded = [];
      for (const src of group) uploaded.push(await uploadSource(client, src, spinner));
      req.groups.push(uploaded);
    }
    if (flags.priority !== undefined) req.priority = flags.priority;
    if (flags.force) req.force = true;
    spinner.update(`queueing the chain in ${target}`);
    return await client.createChainBuild(req);
  } finally {
    spinner.stop();
  }
}

export function registerChainBuildCommands(program: Command): void {
  program
    .command("chain-build")
    .description(
      `Build groups of sources in order, each group against the builds of the one before (groups separated by "${GROUP_SEPARATOR}")`,
    )
    .usage(`[options] <target> <source>... [${GROUP_SEPARATOR} <source>...]...`)
    .argument("<target>", "the build target (its build tag must inherit its destination tag)")
    .argument(
      "<sources...>",
      `sources as \`kiln build\` takes them (a directory with debian/, a .dsc, a git URL#REF); "${GROUP_SEPARATOR}" between groups`,
    )
    .option("--nowait", "print the chain's task and return at once")
    .option("--priority <n>", "0–100, higher runs first", parseInteger(0, 100))
    .option("--force", "override the build policy (admin; the hub records it)")
    .option("--json", "print the chain's report as JSON")
    .action(async (target: string, sources: string[], opts: ChainFlags, cmd: Command) => {
      const groups = parseChainGroups(sources);
      const client = clientFor(cmd);
      const created = await submitChain(client, target, groups, opts);
      const id = created.task.id;
      if (opts.nowait) {
        if (opts.json) return printJson(created);
        process.stdout.write(`chain build task ${id}\n`);
        process.stderr.write(`follow it with: kiln task watch ${id}; then: kiln chain-info ${id}\n`);
        return;
      }
      process.stderr.write(
        `building ${created.builds.length} builds in ${created.groups} groups as task ${id}; ` +
          "Ctrl-C stops watching, not the chain\n",
      );
      const chain = await watchChain(client, id);
      if (opts.json) printJson(chain);
      else process.stdout.write(formatChainReport(chain));
      if (chain.task.state === "closed") return;
      if (!opts.json) await reportChainFailure(client, chain);
      throw new CliExit(1);
    });

  program
    .command("chain-info")
    .description("Show a chain build: every build's group, state and error")
    .argument("<task>", "the chain's task id (`kiln chain-build` prints it)", parseId)
    .option("--json", "print as JSON")
    .action(async (id: number, opts: { json?: boolean }, cmd: Command) => {
      const chain = await clientFor(cmd).getChainBuild(id);
      if (opts.json) return printJson(chain);
      process.stdout.write(`${describeChainProgress(chain)}\n${formatChainReport(chain)}`);
      if (chain.task.error) process.stdout.write(`${chain.task.error.message} [${chain.task.error.code}]\n`);
    });
}
