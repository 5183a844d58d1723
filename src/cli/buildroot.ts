/** `kiln buildroot …`: the minimal bases builds start from (create, list, show, delete). */
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type { BuildrootDetailJson, BuildrootJson, TaskDetailJson } from "../client/types.js";
import { isFinal } from "../tasks/types.js";
import { formatBytes } from "./byte-progress.js";
import { CliExit, clientFor, parseList } from "./context.js";
import { formatFields, formatTime, printJson, printTable, Spinner, type TextSink } from "./output.js";
import { followLog } from "./task-logs.js";
import { describeTask, isTransient } from "./task-watch.js";

interface JsonFlag {
  json?: boolean;
}

interface CreateFlags extends JsonFlag {
  suite: string;
  mirror: string;
  arch?: string;
  include?: string[];
  nowait?: boolean;
}

/** The last non-empty line of some text, if any. */
export function lastLine(text: string): string | undefined {
  const lines = text.split("\n").map((l) => l.trim());
  return lines.reverse().find((l) => l !== "");
}

/** One base in a few words: `bookworm (bookworm amd64): ready, 80 packages, 95.2 MB`. */
export function formatBuildrootLine(b: BuildrootJson): string {
  const parts: string[] = [b.state];
  if (b.info) parts.push(`${b.info.packages} packages`);
  if (b.size !== null) parts.push(formatBytes(b.size));
  return `${b.name} (${b.suite} ${b.arch}): ${parts.join(", ")}`;
}

export function formatBuildrootDetail(
  b: BuildrootJson | BuildrootDetailJson,
  now: number = Date.now(),
): string {
  const tags = "tags" in b ? b.tags : undefined;
  return formatFields([
    ["buildroot", `${b.name} (id ${b.id})`],
    ["state", b.state],
    ["suite", b.suite],
    ["arch", b.arch],
    ["mirror", b.mirror],
    ["include", ["build-essential", "fakeroot", ...b.include].join(", ")],
    ["sha256", b.sha256],
    ["size", b.size === null ? null : `${formatBytes(b.size)} (${b.size} bytes)`],
    ["packages", b.info?.packages],
    ["debootstrap", b.info?.debootstrap],
    ["apt", b.info?.apt],
    ["error", b.error],
    ["task", b.taskId],
    ["owner", b.owner],
    ["created", formatTime(b.createdAt, now)],
    ["ready", formatTime(b.readyAt, now)],
    ["deleted", formatTime(b.deletedAt, now)],
    [
      "used by",
      tags === undefined
        ? null
        : tags.length === 0
          ? "no tag"
          : tags.map((t) => (t.from === t.tag ? t.tag : `${t.tag} (inherited from ${t.from})`)).join("\n"),
    ],
  ]);
}

/** What the spinner says while the task runs: its state, and on a terminal its log's last line. */
function progressLine(name: string, task: TaskDetailJson, logLine: string | undefined): string {
  const running = task.state === "open" || task.state === "assigned";
  const tail = running && logLine ? `: ${logLine}` : "";
  return `making ${name}: task ${describeTask(task)}${tail}`;
}

/**
 * Waits until the base's task is final, showing its state and the last line of its log, then
 * answers the base as the hub has it (ready or failed).
 */
export async function waitForBuildroot(
  client: KilnClient,
  base: BuildrootJson,
  opts: { spinner?: Spinner; intervalMs?: number } = {},
): Promise<{ base: BuildrootJson; task: TaskDetailJson }> {
  const taskId = base.taskId as number;
  const spinner = opts.spinner ?? new Spinner();
  let logLine: string | undefined;
  const sink: TextSink = {
    write(text) {
      logLine = lastLine(text) ?? logLine;
      return true;
    },
  };
  // The log feeds the spinner only; losing it loses nothing the poll below does not see.
  const showLog = process.stderr.isTTY === true;
  const following = showLog
    ? followLog(client, taskId, { out: sink, err: { write: () => true } }).catch(() => 1)
    : undefined;
  let task: TaskDetailJson | undefined;
  try {
    for (;;) {
      try {
        task = await client.getTask(taskId);
      } catch (err) {
        if (!isTransient(err) || task === undefined) throw err;
        spinner.update(`lost the hub (${(err as Error).message}); still trying…`);
        await sleep((opts.intervalMs ?? 1000) * 2);
        continue;
      }
      if (isFinal(task.state)) break;
      spinner.update(progressLine(base.name, task, logLine));
      await sleep(opts.intervalMs ?? 1000);
    }
  } finally {
    spinner.stop();
  }
  await following;
  // The row follows its task in the same transaction: it is ready or failed by now.
  return { base: await client.getBuildroot(base.name), task };
}

async function createAndWait(client: KilnClient, name: string, opts: CreateFlags): Promise<void> {
  const created = await client.createBuildroot({
    name,
    suite: opts.suite,
    mirror: opts.mirror,
    ...(opts.arch !== undefined ? { arch: opts.arch } : {}),
    ...(opts.include !== undefined ? { include: opts.include } : {}),
  });
  const { buildroot, task } = created;
  if (opts.nowait) {
    if (opts.json) return printJson(created);
    process.stdout.write(
      `Making buildroot base ${buildroot.name} (${buildroot.suite} ${buildroot.arch}) in task ${task.id}; ` +
        `follow it with \`kiln task watch ${task.id}\`, then \`kiln buildroot show ${buildroot.name}\`.\n`,
    );
    return;
  }
  if (!opts.json) process.stderr.write(`Making ${buildroot.name} in task ${task.id}…\n`);
  const done = await waitForBuildroot(client, buildroot);
  if (opts.json) printJson(done.base);
  if (done.base.state === "ready") {
    if (!opts.json) process.stdout.write(`${formatBuildrootDetail(done.base)}`);
    return;
  }
  const why = done.base.error ?? done.task.error?.message ?? done.task.state;
  process.stderr.write(
    `kiln: making buildroot base ${buildroot.name} failed: ${why}\n` +
      `  see its log: kiln task logs ${task.id}\n`,
  );
  throw new CliExit(1);
}

export function registerBuildrootCommand(program: Command): void {
  const cmd = program
    .command("buildroot")
    .description("Manage buildroot bases: minimal debootstrap trees that builds start from");

  cmd
    .command("create")
    .description(
      "Make a base (admin): debootstrap --variant=minbase plus build-essential and fakeroot, on a worker with the buildroot channel",
    )
    .argument("<name>", "the base's name (what `kiln tag edit TAG --buildroot NAME` takes)")
    .requiredOption("--suite <suite>", "the Debian suite or codename (bookworm, trixie, stable…)")
    .requiredOption("--mirror <url>", "the Debian mirror, e.g. http://deb.debian.org/debian")
    .option("--arch <arch>", "the architecture (default: the hub's own dpkg architecture)")
    .option("--include <pkgs>", "more packages to include, comma-separated (repeatable)", parseList)
    .option("--nowait", "print the task and return at once")
    .option("--json", "print the base as JSON ({buildroot, task} with --nowait)")
    .action(async (name: string, opts: CreateFlags, sub: Command) => {
      await createAndWait(clientFor(sub), name, opts);
    });

  cmd
    .command("list")
    .description("List bases")
    .option("--all", "deleted ones too")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag & { all?: boolean }, sub: Command) => {
      const bases = await clientFor(sub).listBuildroots({ all: opts.all === true });
      if (opts.json) return printJson(bases);
      printTable<BuildrootJson>(bases, [
        { header: "name", value: (b) => b.name },
        { header: "state", value: (b) => b.state },
        { header: "suite", value: (b) => b.suite },
        { header: "arch", value: (b) => b.arch },
        { header: "packages", value: (b) => b.info?.packages ?? null, align: "right" },
        { header: "size", value: (b) => (b.size === null ? null : formatBytes(b.size)), align: "right" },
        { header: "sha256", value: (b) => (b.sha256 ? b.sha256.slice(0, 12) : null) },
        { header: "task", value: (b) => b.taskId, align: "right" },
      ]);
    });

  cmd
    .command("show")
    .description("Show a base: what it holds and which tags build in it")
    .argument("<name>", "the base's name")
    .option("--json", "print as JSON")
    .action(async (name: string, opts: JsonFlag, sub: Command) => {
      const base = await clientFor(sub).getBuildroot(name);
      if (opts.json) return printJson(base);
      process.stdout.write(formatBuildrootDetail(base));
    });

  cmd
    .command("delete")
    .description(
      "Delete a base (admin): cancels it if still being made; its tarball goes at the next `kiln gc`",
    )
    .argument("<name>", "the base's name")
    .option("--force", "even while tags name it (their builds fail until they name another)")
    .option("--json", "print the deleted base as JSON")
    .action(async (name: string, opts: JsonFlag & { force?: boolean }, sub: Command) => {
      const deleted = await clientFor(sub).deleteBuildroot(name, { force: opts.force === true });
      if (opts.json) return printJson(deleted);
      process.stdout.write(`Deleted buildroot base ${deleted.name}.\n`);
    });
}
