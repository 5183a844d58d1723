/** What the build handlers share: running a step in the sandbox, logged, and stopping on cancel. */
import { TaskFailure, type TaskContext } from "./handler.js";
import { runSandboxed, sandboxAvailable, type SandboxLimits, type SandboxOutcome } from "./sandbox.js";

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

export interface StepOutcome extends SandboxOutcome {
  /** The step's output (its last CAPTURE_LIMIT characters). */
  output: string;
}

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

/** Fails the task (as an infrastructure failure, so it runs elsewhere) when this host cannot sandbox. */
export function requireSandbox(): void {
  const check = sandboxAvailable();
  if (!check.ok) {
    throw new TaskFailure(
      "SANDBOX_UNAVAILABLE",
      `the build sandbox cannot run on this worker: ${check.reason}`,
      {
        infra: true,
      },
    );
  }
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/**
 * Runs one step in the sandbox with the task's workspace at /build, echoing the command and
 * streaming its output to the task log. Throws TASK_CANCELED when the task was stopped meanwhile;
 * otherwise resolves with the outcome, whatever the exit status.
 */
export async function runStep(
  ctx: Pick<TaskContext, "signal" | "task" | "log" | "killGrace" | "workDir">,
  step: { cwd: string; argv: [string, ...string[]]; env?: Record<string, string>; limits?: SandboxLimits },
): Promise<StepOutcome> {
  throwIfStopped(ctx);
  ctx.log(`\n$ ${step.argv.map(shellQuote).join(" ")}   (in ${step.cwd})\n`);
  let output = "";
  const out = await runSandboxed({
    workspace: ctx.workDir,
    cwd: step.cwd,
    argv: step.argv,
    ...(step.env ? { env: step.env } : {}),
    ...(step.limits ? { limits: step.limits } : {}),
    signal: ctx.signal,
    killGrace: ctx.killGrace,
    onOutput: (text) => {
      ctx.log(text);
      output += text;
      if (output.length > CAPTURE_LIMIT * 2) output = output.slice(-CAPTURE_LIMIT);
    },
  });
  if (ctx.signal.aborted) throw canceled(ctx, out);
  if (out.timedOut) {
    throw new TaskFailure(
      "BUILD_FAILED",
      `${step.argv[0]} ran past its time limit and was killed; see the log`,
      {
        exitCode: out.exitCode,
        signal: out.signal,
      },
    );
  }
  return { ...out, output: output.slice(-CAPTURE_LIMIT) };
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
