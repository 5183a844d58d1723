import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { KilnClient } from "../../src/client/client.js";

export const KILN_BIN = path.resolve(import.meta.dirname, "../../bin/kiln.js");

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<string>;
}

export function spawnKiln(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [KILN_BIN, ...args], {
    env: { ...process.env, KILN_LOG_LEVEL: process.env.KILN_LOG_LEVEL ?? "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<string>((resolve) =>
    child.on("exit", (code, signal) => resolve(signal ?? String(code))),
  );
  return { child, output: () => out, exited };
}

export interface KilnRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI against a hub and resolves with its exit code and output. Asynchronously: a hub in
 * this process must go on answering (and a blocked test would stop draining a hub's pipes).
 */
export function runKiln(hub: string, token: string, args: string[], timeoutMs = 240_000): Promise<KilnRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [KILN_BIN, "--hub", hub, "--token", token, ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ code: status ?? -1, stdout, stderr });
    });
  });
}

export interface HubProc extends Proc {
  url: string;
  token: string;
  admin: KilnClient;
}

/** `kiln serve` as its own process; fast engine timings unless the test gives others. */
export async function startHubProcess(opts: {
  dataDir: string;
  port: number;
  db?: string;
  worker?: boolean;
  engine?: Record<string, number>;
  workerName?: string;
  /** Top-level kiln.toml lines (before [engine]). */
  toml?: string;
}): Promise<HubProc> {
  mkdirSync(opts.dataDir, { recursive: true });
  const engine = {
    heartbeat_interval: 1,
    missed_heartbeats: 3,
    backoff_base: 0.2,
    backoff_max: 1,
    kill_grace: 2,
    ...opts.engine,
  };
  writeFileSync(
    path.join(opts.dataDir, "kiln.toml"),
    `${opts.toml ?? ""}\n[engine]\n${Object.entries(engine)
      .map(([k, v]) => `${k} = ${v}`)
      .join("\n")}\n`,
  );
  const args = ["serve", "--data", opts.dataDir, "--listen", `127.0.0.1:${opts.port}`];
  if (opts.db) args.push("--db", opts.db);
  if (opts.worker === false) args.push("--no-worker");
  const proc = spawnKiln(args, opts.workerName ? { KILN_WORKER_NAME: opts.workerName } : {});
  const url = `http://127.0.0.1:${opts.port}`;
  await waitFor(`the hub at ${url}`, async () => {
    if (proc.child.exitCode !== null) throw new Error(`hub exited: ${proc.output()}`);
    const res = await fetch(`${url}/healthz`).catch(() => undefined);
    return res?.ok;
  });
  const token = readFileSync(path.join(opts.dataDir, "admin-token"), "utf8").trim();
  return { ...proc, url, token, admin: new KilnClient({ hub: url, token }) };
}

export function startWorkerProcess(url: string, token: string, workDir: string): Proc {
  return spawnKiln([
    "worker",
    "--hub",
    url,
    "--token",
    token,
    "--work-dir",
    workDir,
    "--kill-grace",
    "2",
    "--shutdown-grace",
    "2",
  ]);
}

export async function stop(proc: Proc | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill(signal);
  const timer = setTimeout(() => proc.child.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
}
