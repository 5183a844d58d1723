import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import type { Readable } from "node:stream";

export interface RunProcessOptions {
  cwd: string;
  /** The child's whole environment (as with `spawn`, it replaces process.env, not adds to it). */
  env?: Record<string, string>;
  /** Aborting stops the job: SIGTERM to its process group, SIGKILL after `killGrace`. */
  signal: AbortSignal;
  onOutput(text: string): void;
  /**
   * Given, the command also gets a pipe as fd 3, read apart from its output: a side channel a
   * script can report on without mixing with (or being forged by) what the programs it runs print.
   */
  onStatus?(text: string): void;
  /** Seconds between SIGTERM and SIGKILL. */
  killGrace: number;
}

export interface ProcessOutcome {
  /** The leader's exit code, or null when a signal ended it. */
  exitCode: number | null;
  /** The signal that ended the leader (e.g. "SIGTERM"), or null. */
  signal: string | null;
}

const POLL_MS = 100;
/** How long past SIGKILL to wait for the group to vanish before giving up on it. */
const REAP_CAP_MS = 5_000;
/** How long to wait for the output pipes to close once the group is gone. */
const PIPE_CAP_MS = 2_000;

/**
 * Runs a command as the leader of its own process group, streaming stdout and stderr as text.
 *
 * Resolves only once the whole group is gone: on abort the group gets SIGTERM, then SIGKILL
 * after `killGrace` seconds; when the leader exits by itself, anything it left running in its
 * group is stopped the same way, so no job leaves a process behind. When `signal` is already
 * aborted nothing is spawned and both fields are null. Rejects only if the command cannot start.
 */
export function runProcess(cmd: string, args: string[], opts: RunProcessOptions): Promise<ProcessOutcome> {
  if (opts.signal.aborted) return Promise.resolve({ exitCode: null, signal: null });
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      ...(opts.env ? { env: opts.env } : {}),
      detached: true,
      stdio: opts.onStatus ? ["ignore", "pipe", "pipe", "pipe"] : ["ignore", "pipe", "pipe"],
    });
    const pid = child.pid;
    let outcome: ProcessOutcome | undefined;
    let pipesClosed = false;
    let groupGone = false;
    let settled = false;
    let terminating = false;
    let polling = false;
    const timers: NodeJS.Timeout[] = [];
    let poller: NodeJS.Timeout | undefined;

    const finish = () => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      clearInterval(poller);
      opts.signal.removeEventListener("abort", onAbort);
      if (outcome) resolve(outcome);
    };

    const maybeFinish = () => {
      if (settled || !outcome || !groupGone) return;
      if (pipesClosed) return finish();
      // Something outside the group (e.g. a setsid'd daemon) still holds the pipes.
      timers.push(
        setTimeout(() => {
          for (const pipe of child.stdio as (Readable | null)[]) pipe?.destroy();
          finish();
        }, PIPE_CAP_MS),
      );
    };

    const poll = () => {
      if (polling || groupGone || pid === undefined) return;
      polling = true;
      isGroupAlive(pid)
        .then((alive) => {
          polling = false;
          if (alive) return;
          groupGone = true;
          clearInterval(poller);
          maybeFinish();
        })
        .catch(() => {
          polling = false;
        });
    };

    const terminate = () => {
      if (terminating || pid === undefined) return;
      terminating = true;
      signalGroup(pid, "SIGTERM");
      timers.push(
        setTimeout(
          () => {
            if (groupGone) return;
            signalGroup(pid, "SIGKILL");
            // Zombies nobody reaps must not hold the job forever.
            timers.push(
              setTimeout(() => {
                groupGone = true;
                maybeFinish();
              }, REAP_CAP_MS),
            );
          },
          Math.max(0, opts.killGrace) * 1000,
        ),
      );
      poller = setInterval(poll, POLL_MS);
      poll();
    };

    const onAbort = () => terminate();

    child.on("error", (err) => {
      if (pid !== undefined) return; // failures after a successful spawn show as exit status
      settled = true;
      opts.signal.removeEventListener("abort", onAbort);
      reject(new Error(`cannot run ${cmd} (in ${opts.cwd}): ${err.message}`, { cause: err }));
    });
    if (pid === undefined) return;

    const [, stdout, stderr, status] = child.stdio as (Readable | null)[];
    for (const pipe of [stdout, stderr]) {
      pipe?.setEncoding("utf8");
      pipe?.on("data", (text: string) => opts.onOutput(text));
    }
    if (status && opts.onStatus) {
      status.setEncoding("utf8");
      status.on("data", (text: string) => opts.onStatus?.(text));
    }
    child.on("close", () => {
      pipesClosed = true;
      maybeFinish();
    });
    child.on("exit", (code, sig) => {
      outcome = { exitCode: code, signal: sig };
      if (terminating) return maybeFinish();
      // The leader is gone; stop whatever it left behind in its group.
      isGroupAlive(pid)
        .then((alive) => {
          if (alive) terminate();
          else {
            groupGone = true;
            maybeFinish();
          }
        })
        .catch(() => terminate());
    });
    opts.signal.addEventListener("abort", onAbort, { once: true });
  });
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/**
 * Does any live (non-zombie) process remain in the group? Zombies count as members for
 * kill(-pgid, 0), and where PID 1 does not reap orphans they never leave, so read /proc — but
 * only when kill says the group has members: reading every process's stat costs milliseconds
 * per hundred processes, paid after every step, while an empty group is the usual answer.
 */
export async function isGroupAlive(pgid: number): Promise<boolean> {
  if (!killProbe(pgid)) return false;
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return killProbe(pgid);
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[2]) === pgid && fields[0] !== "Z" && fields[0] !== "X") return true;
  }
  return false;
}

function killProbe(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
