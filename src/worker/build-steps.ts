/** What the build handlers share: running steps in the sandbox, logged, and stopping on cancel. */
import { TaskFailure, type TaskContext } from "./handler.js";
import type { ProcessOutcome } from "./executor.js";
import {
  runSandboxed,
  SANDBOX_WORKSPACE,
  sandboxAvailable,
  type SandboxLimits,
  type SandboxOptions,
} from "./sandbox.js";

/**
 * Limits of every build step, per process (prlimit in the sandbox): generous, to stop runaways
 * rather than to meter. The processes count is per sandbox (it has its own user namespace).
 */
export const BUILD_LIMITS: Readonly<SandboxLimits> = {
  processes: 4096,
  memoryBytes: 16 * 1024 ** 3,
  fileSizeBytes: 16 * 1024 ** 3,
};

/** How much of a step's output is kept in memory for the handler to read (the log has it all). */
const CAPTURE_LIMIT = 256 * 1024;

/** Throws TASK_CANCELED once the task has been stopped (cancel, timeout, lease lost, shutdown). */
export function throwIfStopped(ctx: Pick<TaskContext, "signal" | "task">): void {
  if (ctx.signal.aborted) throw canceled(ctx);
}

export function canceled(
  ctx: Pick<TaskContext, "task">,
  out?: { exitCode: number | null; signal: string | null },
): TaskFailure {
  return new TaskFailure(
    "TASK_CANCELED",
    `${ctx.task.method} was stopped`,
    out ? { exitCode: out.exitCode, signal: out.signal } : {},
  );
}

/**
 * Runs a handler's body so that whatever it throws after the task was stopped (a download cut
 * short, a killed step) is reported as TASK_CANCELED.
 */
export async function guardStopped<T>(
  ctx: Pick<TaskContext, "signal" | "task">,
  body: () => Promise<T>,
): Promise<T> {
  try {
    throwIfStopped(ctx);
    return await body();
  } catch (err) {
    if (ctx.signal.aborted && !(err instanceof TaskFailure && err.code === "TASK_CANCELED"))
      throw canceled(ctx);
    throw err;
  }
}

/** How long a successful probe of the sandbox stands (a run that cannot start clears it sooner). */
const SANDBOX_RECHECK_MS = 10 * 60_000;
let sandboxCheckedAt: number | undefined;

/**
 * Fails the task (as an infrastructure failure, so it runs elsewhere) when this host cannot
 * sandbox. The probe starts a sandbox, synchronously: it is remembered for a while rather than
 * paid, with the event loop blocked, by every task.
 */
export function requireSandbox(): void {
  const now = Date.now();
  if (sandboxCheckedAt !== undefined && now - sandboxCheckedAt < SANDBOX_RECHECK_MS) return;
  const check = sandboxAvailable();
  if (!check.ok) {
    sandboxCheckedAt = undefined;
    throw new TaskFailure(
      "SANDBOX_UNAVAILABLE",
      `the build sandbox cannot run on this worker: ${check.reason}`,
      {
        infra: true,
      },
    );
  }
  sandboxCheckedAt = now;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/** One command of a sandboxed run. */
export interface Step {
  /** Working directory inside the sandbox, e.g. /build/pkg. */
  cwd: string;
  argv: [string, ...string[]];
  /** Added to the sandbox's clean environment for this step alone. */
  env?: Record<string, string>;
}

/** The step that failed: which one (its index), how it ended, and what it printed. */
export interface StepFailure extends ProcessOutcome {
  index: number;
  /** The step's output after the line announcing it (its last CAPTURE_LIMIT characters). */
  output: string;
}

/** The line the log shows before a step's output: `$ dpkg-source -x a.dsc   (in /build/pkg)`. */
function stepHeader(step: Step): string {
  return `\n$ ${step.argv.map(shellQuote).join(" ")}   (in ${step.cwd})\n`;
}

/**
 * The sh script that runs `steps` in order and stops at the first that fails, exiting with its
 * status. Each step is announced on stdout (so the log shows it in order with its output) and
 * reported on fd 3 — `begin I`, then `end I STATUS` — which the step itself does not get, so
 * nothing it prints can pass for a report. A step's stderr joins its stdout, keeping the two in
 * order in the log. `env` runs it with the sandbox's environment plus its own, without the
 * PWD and OLDPWD the shell would add.
 */
export function stepsScript(steps: readonly Step[]): string {
  const lines: string[] = [];
  steps.forEach((step, i) => {
    if (step.argv[0].includes("=")) throw new Error(`a step's command cannot contain "=": ${step.argv[0]}`);
    const env = Object.entries(step.env ?? {}).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad environment variable name ${k}`);
      return shellQuote(`${k}=${v}`);
    });
    lines.push(
      `printf 'begin ${i}\\n' >&3`,
      `printf '%s' ${shellQuote(stepHeader(step))}`,
      [
        "env -u PWD -u OLDPWD",
        shellQuote(`--chdir=${step.cwd}`),
        "--",
        ...env,
        ...step.argv.map(shellQuote),
        "2>&1 3>&-",
      ].join(" "),
      "kiln_status=$?",
      `printf 'end ${i} %s\\n' "$kiln_status" >&3`,
      '[ "$kiln_status" -eq 0 ] || exit "$kiln_status"',
    );
  });
  lines.push("exit 0");
  return `${lines.join("\n")}\n`;
}

/** What the script reported on fd 3: the steps begun, and the status of each that ended. */
function parseReports(text: string): { begun: number; ended: Map<number, number> } {
  let begun = 0;
  const ended = new Map<number, number>();
  for (const line of text.split("\n")) {
    const begin = /^begin (\d+)$/.exec(line);
    if (begin) begun = Math.max(begun, Number(begin[1]) + 1);
    const end = /^end (\d+) (\d+)$/.exec(line);
    if (end) ended.set(Number(end[1]), Number(end[2]));
  }
  return { begun, ended };
}

/** What follows the line announcing `step` (all of the capture when that line was cut off it). */
function outputOf(output: string, step: Step): string {
  const header = stepHeader(step);
  const at = output.lastIndexOf(header);
  return at === -1 ? output : output.slice(at + header.length);
}

/**
 * Runs `steps` one after the other in one sandbox (one start of it for all: each costs 10–30 ms)
 * with the task's workspace at /build, streaming their output to the task log.
 * Stops at the first step that fails and resolves with it; undefined when every step succeeded.
 * Throws TASK_CANCELED when the task was stopped meanwhile, BUILD_FAILED past the wall-time
 * limit, and SANDBOX_UNAVAILABLE (infra) when the sandbox did not get as far as the first step.
 */
export async function runSteps(
  ctx: Pick<TaskContext, "signal" | "task" | "log" | "killGrace" | "workDir">,
  steps: readonly [Step, ...Step[]],
  opts: {
    limits?: SandboxLimits;
    sandbox?: Pick<SandboxOptions, "root" | "privileged" | "network" | "env">;
  } = {},
): Promise<StepFailure | undefined> {
  throwIfStopped(ctx);
  const script = stepsScript(steps);
  let output = "";
  let reports = "";
  const out = await runSandboxed({
    workspace: ctx.workDir,
    cwd: SANDBOX_WORKSPACE,
    argv: ["sh", "-c", script, "kiln-steps"],
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...opts.sandbox,
    signal: ctx.signal,
    killGrace: ctx.killGrace,
    onOutput: (text) => {
      ctx.log(text);
      output += text;
      if (output.length > CAPTURE_LIMIT * 2) output = output.slice(-CAPTURE_LIMIT);
    },
    onStatus: (text) => {
      if (reports.length < 64 * 1024) reports += text;
    },
  });
  if (ctx.signal.aborted) throw canceled(ctx, out);
  const { begun, ended } = parseReports(reports);
  const last = begun - 1;
  const current = steps[Math.max(0, last)] ?? steps[0];
  if (out.timedOut) {
    throw new TaskFailure(
      "BUILD_FAILED",
      `${current.argv[0]} ran past its time limit and was killed; see the log`,
      {
        exitCode: out.exitCode,
        signal: out.signal,
      },
    );
  }
  if (begun === 0) {
    // bwrap (or the shell) failed before any step: the host's fault, as the probe would have said.
    sandboxCheckedAt = undefined;
    throw new TaskFailure(
      "SANDBOX_UNAVAILABLE",
      `the build sandbox did not start (it ${describeExit(out)}): ${lastLines(output, 3)}`,
      { infra: true },
    );
  }
  const status = ended.get(last);
  if (status === 0) {
    if (begun === steps.length) return undefined;
    // The script goes straight from one step's end to the next one's start.
    throw new TaskFailure(
      "TASK_FAILED",
      `the build sandbox ended between ${current.argv[0]} and the next step (it ${describeExit(out)})`,
      { infra: true },
    );
  }
  // A step with no report was cut short with the whole sandbox: its outcome is the sandbox's.
  const end: ProcessOutcome =
    status === undefined
      ? { exitCode: out.exitCode, signal: out.signal }
      : { exitCode: status, signal: null };
  return { index: last, ...end, output: outputOf(output, current).slice(-CAPTURE_LIMIT) };
}

/** "exited with 2" / "was killed by SIGKILL". */
export function describeExit(out: { exitCode: number | null; signal: string | null }): string {
  return out.signal ? `was killed by ${out.signal}` : `exited with ${out.exitCode}`;
}

/** The last `n` non-empty lines of a step's output, for an error message. */
export function lastLines(output: string, n = 5): string {
  return output
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l !== "")
    .slice(-n)
    .join("\n");
}
