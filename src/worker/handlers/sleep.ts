import { runProcess } from "../executor.js";
import { TaskFailure, type TaskHandler } from "../handler.js";

// A real child process, so that cancel, timeouts and shutdown are exercised end to end.
const SCRIPT = 'n=$1; i=1; while [ "$i" -le "$n" ]; do sleep 1; echo "sleep: $i/$n"; i=$((i + 1)); done';

function parseArgs(args: unknown): { seconds: number; fail: boolean } {
  const a = (args ?? {}) as { seconds?: unknown; fail?: unknown };
  if (typeof a.seconds !== "number" || !Number.isFinite(a.seconds) || a.seconds < 0) {
    throw new TaskFailure("VALIDATION_FAILED", "sleep: seconds must be a number of at least 0");
  }
  return { seconds: a.seconds, fail: a.fail === true };
}

/** `sleep {seconds, fail}`: a test and smoke-check method that sleeps in a child process. */
export const sleepHandler: TaskHandler = async (ctx) => {
  const { seconds, fail } = parseArgs(ctx.task.args);
  if (seconds === 0) {
    ctx.log("sleep: 0 seconds, nothing to do\n");
  } else {
    const n = Math.ceil(seconds);
    const out = await runProcess("/bin/sh", ["-c", SCRIPT, "sleep", String(n)], {
      cwd: ctx.workDir,
      // KILN_TASK_ID marks the job's processes, so tools (and tests) can find them.
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        LC_ALL: "C.UTF-8",
        KILN_TASK_ID: String(ctx.task.id),
      },
      signal: ctx.signal,
      onOutput: (text) => ctx.log(text),
      killGrace: ctx.killGrace,
    });
    if (ctx.signal.aborted) {
      throw new TaskFailure("TASK_CANCELED", "sleep was stopped", {
        exitCode: out.exitCode,
        signal: out.signal,
      });
    }
    if (out.exitCode !== 0) {
      const how = out.signal ? `was killed by ${out.signal}` : `exited with code ${out.exitCode}`;
      throw new TaskFailure("TASK_FAILED", `sleep ${how}`, { exitCode: out.exitCode, signal: out.signal });
    }
  }
  if (fail) throw new TaskFailure("TASK_FAILED", "sleep failed as asked", { exitCode: 1 });
  return { result: { slept: seconds } };
};
