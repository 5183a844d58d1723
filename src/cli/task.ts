/** `kiln task …`: queue, inspect, wait for, cancel and retry tasks; read their logs. */
import { InvalidArgumentError, type Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type { CreateTaskRequest, LockSpec, TaskDetailJson, TaskJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { CliExit, clientFor, parseId, parseInteger, parseNumber } from "./context.js";
import {
  formatDuration,
  formatFields,
  formatRelative,
  formatTime,
  printJson,
  printTable,
  write,
} from "./output.js";
import { followLog } from "./task-logs.js";
import { waitingLine, watchTasks } from "./task-watch.js";

interface JsonFlag {
  json?: boolean;
}

/**
 * `NAME`, `NAME:exclusive` or `NAME:shared`. Resource names hold colons themselves
 * (`repo:main`, `publish:PREFIX/DIST`), so only a trailing `:shared`/`:exclusive` is a mode.
 */
export function parseLock(value: string): LockSpec {
  const match = /^(.*):(shared|exclusive)$/.exec(value);
  const resource = (match ? match[1] : value)?.trim() ?? "";
  if (resource === "") throw new InvalidArgumentError("expected NAME, NAME:shared or NAME:exclusive");
  return { resource, exclusive: match?.[2] !== "shared" };
}

function collectLock(value: string, previous: LockSpec[]): LockSpec[] {
  return [...previous, parseLock(value)];
}

function collectIds(value: string, previous: number[] | undefined): number[] {
  return [...(previous ?? []), parseId(value)];
}

export interface SleepFlags {
  fail?: boolean;
  priority?: number;
  arch?: string;
  channel?: string;
  weight?: number;
  timeout?: number;
  lock?: LockSpec[];
  subtasks?: number;
}

/**
 * The request `kiln task sleep` sends: one `sleep` task, or with --subtasks a `group` of N
 * sleeps — placement flags (arch, channel, weight) then go to the sleeps, the rest to the group.
 */
export function buildSleepRequest(seconds: number, flags: SleepFlags): CreateTaskRequest {
  const args = { seconds, fail: flags.fail === true };
  const placement = {
    ...(flags.arch !== undefined ? { arch: flags.arch } : {}),
    ...(flags.channel !== undefined ? { channel: flags.channel } : {}),
    ...(flags.weight !== undefined ? { weight: flags.weight } : {}),
  };
  const common = {
    ...(flags.priority !== undefined ? { priority: flags.priority } : {}),
    ...(flags.timeout !== undefined ? { timeout: flags.timeout } : {}),
    ...(flags.lock && flags.lock.length > 0 ? { locks: flags.lock } : {}),
  };
  if (flags.subtasks === undefined) return { method: "sleep", args, ...placement, ...common };
  const tasks = Array.from({ length: flags.subtasks }, () => ({ method: "sleep", args, ...placement }));
  return { method: "group", args: { tasks }, ...common };
}

function stateText(task: TaskJson): string {
  return task.waiting ? `${task.state} (waiting for subtasks)` : task.state;
}

/** JSON on one line when it is short, indented when it is not. */
function formatJsonValue(value: unknown): string {
  const line = JSON.stringify(value);
  return line.length <= 100 ? line : JSON.stringify(value, null, 2);
}

export function formatTaskDetail(task: TaskDetailJson, now: number = Date.now()): string {
  const head = `task ${task.id}  ${task.method}  ${stateText(task)}\n`;
  const waiting = task.why ? `${waitingLine(task.why)}\n` : "";
  const error = task.error
    ? [
        `${task.error.message} [${task.error.code}]`,
        task.error.exitCode !== undefined && task.error.exitCode !== null
          ? `exit code ${task.error.exitCode}`
          : "",
        task.error.signal ? `signal ${task.error.signal}` : "",
        task.error.infra ? "infrastructure failure" : "",
      ]
        .filter(Boolean)
        .join("; ")
    : null;
  const ran =
    task.startedAt && task.completedAt
      ? formatDuration((new Date(task.completedAt).getTime() - new Date(task.startedAt).getTime()) / 1000)
      : null;
  const fields = formatFields([
    ["owner", task.owner],
    ["priority", task.priority],
    ["arch", task.arch],
    ["channel", task.channel],
    ["weight", task.weight],
    ["host", task.host],
    ["parent", task.parentId],
    ["label", task.label],
    ["attempts", `${task.attempts} (infra failures ${task.infraFailures}, lease epoch ${task.leaseEpoch})`],
    ["timeout", formatDuration(task.timeout)],
    ["locks", task.locks.map((l) => `${l.resource} (${l.exclusive ? "exclusive" : "shared"})`).join(", ")],
    ["subtasks", task.subtasks.join(", ")],
    ["created", formatTime(task.createdAt, now)],
    [
      "runs after",
      task.state === "free" && new Date(task.runAt).getTime() > now ? formatTime(task.runAt, now) : null,
    ],
    ["started", formatTime(task.startedAt, now)],
    ["completed", formatTime(task.completedAt, now)],
    ["ran for", ran],
    ["args", task.args === null || task.args === undefined ? null : formatJsonValue(task.args)],
    ["result", task.result === null || task.result === undefined ? null : formatJsonValue(task.result)],
    ["error", error],
  ]);
  return `${head}${waiting}${fields}`;
}

/** Host names for the list, when the token may see hosts (admins); ids otherwise. */
async function hostNames(client: KilnClient, tasks: readonly TaskJson[]): Promise<Map<number, string>> {
  const names = new Map<number, string>();
  if (!tasks.some((t) => t.hostId !== null)) return names;
  try {
    for (const host of await client.listHosts()) names.set(host.id, host.name);
  } catch (err) {
    if (!(err instanceof KilnError)) throw err;
  }
  return names;
}

async function watchAndReport(
  client: KilnClient,
  ids: number[],
  json: boolean,
  single: boolean,
): Promise<void> {
  const { tasks, ok } = await watchTasks(client, ids, { quiet: json });
  if (json) printJson(single ? tasks[0] : tasks);
  if (!ok) throw new CliExit(1);
}

export function registerTaskCommand(program: Command): void {
  const task = program.command("task").description("Queue, inspect and control tasks");

  task
    .command("sleep")
    .description("Queue a task that sleeps (to try out hosts, scheduling and locks), then watch it")
    .argument("<seconds>", "how long to sleep", parseNumber(0, 86400))
    .option("--fail", "fail at the end instead of closing")
    .option("--priority <n>", "0–100, higher runs first (default 20)", parseInteger(0, 100))
    .option("--arch <arch>", "architecture a host must have (default noarch)")
    .option("--channel <channel>", "channel a host must serve (default default)")
    .option("--weight <w>", "share of a host's capacity it takes", parseNumber(0))
    .option("--timeout <s>", "fail the task after this many seconds", parseInteger(1))
    .option(
      "--lock <name[:shared]>",
      "hold a resource lock, exclusive unless :shared (repeatable; admin only)",
      collectLock,
      [] as LockSpec[],
    )
    .option("--subtasks <n>", "queue a group of N sleeping subtasks instead", parseInteger(1, 1000))
    .option("--nowait", "print the task's id and return at once")
    .option("--json", "print the task as JSON")
    .action(async (seconds: number, opts: JsonFlag & SleepFlags & { nowait?: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const created = await client.createTask(buildSleepRequest(seconds, opts));
      if (opts.nowait) {
        if (opts.json) printJson(created);
        else process.stdout.write(`${created.id}\n`);
        return;
      }
      if (!opts.json) process.stdout.write(`${created.id}\n`);
      await watchAndReport(client, [created.id], opts.json === true, true);
    });

  task
    .command("list")
    .description("List tasks, newest first")
    .option(
      "--state <states>",
      "only these states, comma-separated (free,assigned,open,closed,failed,canceled)",
    )
    .option("--method <method>", "only this method")
    .option("--owner <user>", "only this owner's tasks")
    .option("--limit <n>", "at most this many (default 100)", parseInteger(1, 1000))
    .option("--before <id>", "only tasks older than this id (the next page)", parseId)
    .option("--json", "print {tasks, next} as JSON")
    .action(
      async (
        opts: JsonFlag & { state?: string; method?: string; owner?: string; limit?: number; before?: number },
        cmd: Command,
      ) => {
        const client = clientFor(cmd);
        const page = await client.listTasks({
          ...(opts.state !== undefined ? { state: opts.state } : {}),
          ...(opts.method !== undefined ? { method: opts.method } : {}),
          ...(opts.owner !== undefined ? { owner: opts.owner } : {}),
          ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
          ...(opts.before !== undefined ? { before: opts.before } : {}),
        });
        if (opts.json) return printJson(page);
        const hosts = await hostNames(client, page.tasks);
        const now = Date.now();
        printTable<TaskJson>(page.tasks, [
          { header: "id", value: (t) => t.id, align: "right" },
          { header: "method", value: (t) => t.method },
          { header: "state", value: (t) => (t.waiting ? `${t.state}*` : t.state) },
          { header: "priority", value: (t) => t.priority, align: "right" },
          { header: "arch", value: (t) => t.arch },
          { header: "channel", value: (t) => t.channel },
          { header: "owner", value: (t) => t.owner },
          {
            header: "host",
            value: (t) => (t.hostId === null ? null : (hosts.get(t.hostId) ?? `#${t.hostId}`)),
          },
          { header: "created", value: (t) => formatRelative(t.createdAt, now) },
        ]);
        if (page.tasks.some((t) => t.waiting)) process.stderr.write("* waiting for subtasks\n");
        if (page.next !== null) process.stderr.write(`more: kiln task list --before ${page.next}\n`);
      },
    );

  task
    .command("show")
    .description("Show a task: state, why it waits, host, locks, subtasks, result or error")
    .argument("<id>", "the task's id", parseId)
    .option("--json", "print as JSON")
    .action(async (id: number, opts: JsonFlag, cmd: Command) => {
      const detail = await clientFor(cmd).getTask(id);
      if (opts.json) return printJson(detail);
      process.stdout.write(formatTaskDetail(detail));
    });

  task
    .command("watch")
    .description("Wait for tasks to finish, showing their states; exits 0 only if all closed")
    .argument("<ids...>", "the tasks' ids", collectIds)
    .option("--json", "print the finished tasks as JSON")
    .action(async (ids: number[], opts: JsonFlag, cmd: Command) => {
      await watchAndReport(clientFor(cmd), ids, opts.json === true, false);
    });

  task
    .command("cancel")
    .description("Cancel a task and its subtasks")
    .argument("<id>", "the task's id", parseId)
    .option("--json", "print {task, canceled} as JSON")
    .action(async (id: number, opts: JsonFlag, cmd: Command) => {
      const answer = await clientFor(cmd).cancelTask(id);
      if (opts.json) return printJson(answer);
      const others = answer.canceled.filter((c) => c !== id).length;
      if (answer.canceled.length === 0) {
        process.stdout.write(`Task ${id} is already ${answer.task.state}; nothing to cancel.\n`);
      } else {
        process.stdout.write(
          `Canceled task ${id}${others > 0 ? ` and ${others} subtask${others === 1 ? "" : "s"}` : ""}.\n`,
        );
      }
    });

  task
    .command("retry")
    .description("Run a failed or canceled task again")
    .argument("<id>", "the task's id", parseId)
    .option("--json", "print the task as JSON")
    .action(async (id: number, opts: JsonFlag, cmd: Command) => {
      const retried = await clientFor(cmd).retryTask(id);
      if (opts.json) return printJson(retried);
      process.stdout.write(
        `Task ${retried.id} is queued again (${retried.state}); follow it with: kiln task watch ${id}\n`,
      );
    });

  task
    .command("logs")
    .description("Print a task's log; with -f follow it until the task ends")
    .argument("<id>", "the task's id", parseId)
    .option("-f, --follow", "stream the log live; exit 0 if the task closes, 1 otherwise")
    .option("--epoch <n>", "the log of this lease epoch (an earlier attempt) instead of the latest", parseId)
    .action(async (id: number, opts: { follow?: boolean; epoch?: number }, cmd: Command) => {
      const client = clientFor(cmd);
      if (!opts.follow) {
        await write(await client.taskLog(id, opts.epoch));
        return;
      }
      const code = await followLog(client, id, opts.epoch !== undefined ? { epoch: opts.epoch } : {});
      if (code !== 0) throw new CliExit(code);
    });
}
