/**
 * The build sandbox — what mock is to Koji, for Debian builds: bubblewrap (bwrap) runs a command
 * in fresh namespaces (mount, pid, ipc, uts, net, user, cgroup) over a read-only view of the host,
 * with only the task's workspace writable (at /build), as an unprivileged user, with a clean
 * environment and resource limits.
 *
 * Running as root, the worker first drops to BUILD_UID with `setpriv` and starts bwrap from
 * there, so the build's processes are really uid 1000 on the host (bwrap's --unshare-user alone,
 * started by root, only relabels root as "1000": the build could still read root's 0600 files).
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, lstatSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { chmod, chown, mkdir } from "node:fs/promises";
import path from "node:path";
import { runProcess, type ProcessOutcome } from "./executor.js";
import { TaskFailure } from "./handler.js";

/** The unprivileged user (and group) builds run as, inside the sandbox and, when we are root, outside. */
export const BUILD_UID = 1000;
export const BUILD_GID = 1000;
/** Where the workspace appears inside the sandbox. */
export const SANDBOX_WORKSPACE = "/build";

const SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

export interface SandboxLimits {
  /** Wall-clock time; when it passes, the whole sandbox is killed and `timedOut` is set. */
  wallSeconds?: number;
  /** RLIMIT_AS of every process (virtual memory, per process). */
  memoryBytes?: number;
  /** RLIMIT_NPROC: processes (threads included) the build may have at once. */
  processes?: number;
  /** RLIMIT_FSIZE: the largest file a process may write (SIGXFSZ past it). */
  fileSizeBytes?: number;
}

export interface SandboxOptions {
  /** Host directory, bound read-write at /build (its owner is set to BUILD_UID when we are root). */
  workspace: string;
  /** Working directory inside the sandbox, e.g. /build/src. */
  cwd: string;
  argv: [string, ...string[]];
  /** Added to the clean environment (PATH, HOME=/build, LC_ALL=C.UTF-8), e.g. DEB_BUILD_OPTIONS. */
  env?: Record<string, string>;
  /** Keep the host's network (default false: a private network namespace with only loopback). */
  network?: boolean;
  /**
   * A buildroot to use as `/` instead of the host's root: mounted read-only, or read-write with
   * `privileged`. It must hold the /build mount point (and prlimit, env and sh).
   */
  root?: string;
  /**
   * Run as real root with a writable `root` and a small set of capabilities — for installing
   * packages into a fresh buildroot (dpkg must chown files to other users and run maintainer
   * scripts), never for the build itself. Needs a root worker and `root`.
   */
  privileged?: boolean;
  limits?: SandboxLimits;
  /** Aborting kills the sandbox's whole process group (SIGTERM, SIGKILL after killGrace). */
  signal: AbortSignal;
  onOutput(text: string): void;
  /** Given, the command gets fd 3, a pipe read apart from its output (see runProcess). */
  onStatus?(text: string): void;
  /** Seconds between SIGTERM and SIGKILL. */
  killGrace: number;
}

export interface SandboxOutcome extends ProcessOutcome {
  /** The wall-time limit passed and the sandbox was killed. */
  timedOut: boolean;
}

/** Host top-level entries that get something private in the sandbox instead of the host's. */
const PRIVATE_TOP = new Set([
  "proc", // --proc: a procfs of the sandbox's own pid namespace
  "dev", // --dev: a minimal /dev (null, zero, random, tty, pts, shm)
  "tmp", // --tmpfs: private, empty
  "run", // --tmpfs: hides the host daemons' Unix sockets (PostgreSQL, D-Bus…), which no network namespace covers
  "home", // --tmpfs: nobody's dotfiles
  "root",
  "lost+found",
]);

function isDirectory(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The first executable `name` on the safe PATH. */
function findTool(name: string): string | undefined {
  for (const dir of SAFE_PATH.split(":")) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The host's root, mounted read-only entry by entry. A plain `--ro-bind / /` cannot be used:
 * bwrap would then have to create the /build mount point on the read-only host root, and fails
 * ("Can't mkdir /build: Read-only file system"). Binding each top-level directory onto bwrap's
 * own tmpfs root gives the same view and leaves room for /build.
 */
function hostRootArgs(): string[] {
  const args: string[] = [];
  for (const name of readdirSync("/").sort()) {
    if (PRIVATE_TOP.has(name) || `/${name}` === SANDBOX_WORKSPACE) continue;
    const host = `/${name}`;
    let st;
    try {
      st = lstatSync(host);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) args.push("--symlink", readlinkSync(host), host);
    else if (st.isDirectory() || st.isFile()) args.push("--ro-bind", host, host);
  }
  return args;
}

/**
 * The full bwrap argument list (without the bwrap program itself). A null workspace (the
 * availability probe) gets an empty /build.
 */
export function bwrapArgs(
  opts: Pick<SandboxOptions, "cwd" | "argv" | "env" | "network" | "limits" | "root" | "privileged"> & {
    workspace: string | null;
  },
): string[] {
  const env: Record<string, string> = {
    PATH: SAFE_PATH,
    HOME: SANDBOX_WORKSPACE,
    LC_ALL: "C.UTF-8",
    ...opts.env,
  };
  if (opts.privileged && opts.root === undefined) throw new Error("sandbox: privileged needs a root");
  const args = opts.root === undefined ? hostRootArgs() : rootArgs(opts.root, opts.privileged === true);
  args.push("--proc", "/proc", "--dev", "/dev");
  // In a buildroot, /tmp is world-writable as on a real system: apt's download user writes there.
  const privateDirs =
    opts.root === undefined ? ["/tmp", "/var/tmp", "/run", "/home", "/root"] : ["/tmp", "/var/tmp", "/run"];
  for (const dir of privateDirs) {
    // A tmpfs needs its mount point: on the read-only host /var, it must exist already.
    const base = opts.root ?? "/";
    if (dir.split("/").length === 2 || isDirectory(path.join(base, dir))) {
      if (opts.root !== undefined) args.push("--perms", dir === "/run" ? "0755" : "1777");
      args.push("--tmpfs", dir);
    }
  }
  if (opts.network && opts.root !== undefined)
    args.push("--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf");
  if (opts.workspace === null) {
    args.push("--dir", SANDBOX_WORKSPACE);
  } else {
    const workspace = path.resolve(opts.workspace);
    // Other tasks' workspaces sit beside this one and belong to the same build user: hide them
    // (unless the parent is a top-level directory such as /tmp, private already or too broad).
    const parent = path.dirname(workspace);
    if (opts.root === undefined && parent !== "/" && path.dirname(parent) !== "/")
      args.push("--tmpfs", parent);
    args.push("--bind", workspace, SANDBOX_WORKSPACE);
  }
  if (opts.privileged) {
    // Real root in its own mount, pid, ipc and uts namespaces, with only what dpkg and apt need.
    args.push(
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--unshare-cgroup-try",
      ...(opts.network ? [] : ["--unshare-net"]),
      "--cap-drop",
      "ALL",
      ...PACKAGE_INSTALL_CAPS.flatMap((c) => ["--cap-add", c]),
    );
  } else {
    args.push(
      "--unshare-all",
      ...(opts.network ? ["--share-net"] : []),
      "--unshare-user",
      "--disable-userns", // no nested user namespace in which the build could be "root" again
      "--uid",
      String(BUILD_UID),
      "--gid",
      String(BUILD_GID),
    );
  }
  args.push("--hostname", "kiln-build", "--die-with-parent", "--clearenv");
  for (const [k, v] of Object.entries(env)) args.push("--setenv", k, v);
  args.push("--chdir", opts.cwd, "--", ...limitArgs(opts.limits), ...opts.argv);
  return args;
}

/** What dpkg, apt and maintainer scripts need to install packages as root, and no more. */
const PACKAGE_INSTALL_CAPS = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_AUDIT_WRITE",
];

/** A buildroot as `/`: read-only for builds, writable for the privileged install phase. */
function rootArgs(root: string, writable: boolean): string[] {
  return [writable ? "--bind" : "--ro-bind", path.resolve(root), "/"];
}

/** `prlimit` in front of the command, inside the sandbox, so the limits bind everything it starts. */
function limitArgs(limits: SandboxLimits | undefined): string[] {
  const out: string[] = [];
  const add = (flag: string, value: number | undefined) => {
    if (value === undefined) return;
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new Error(`sandbox: ${flag} must be a positive integer`);
    out.push(`${flag}=${value}`);
  };
  add("--nproc", limits?.processes);
  add("--as", limits?.memoryBytes);
  add("--fsize", limits?.fileSizeBytes);
  return out.length > 0 ? ["prlimit", ...out, "--"] : [];
}

/** The command that starts bwrap: through `setpriv` down to BUILD_UID when we are root. */
function launcher(bwrap: string, setpriv: string | undefined, privileged = false): [string, string[]] {
  if (privileged) {
    if (!isRoot()) throw new Error("installing into a buildroot needs a worker running as root");
    return [bwrap, []];
  }
  if (!isRoot()) return [bwrap, []];
  if (setpriv === undefined) throw new Error("setpriv (util-linux) is not installed");
  return [setpriv, [`--reuid=${BUILD_UID}`, `--regid=${BUILD_GID}`, "--clear-groups", "--", bwrap]];
}

/**
 * Can this machine run the sandbox? bwrap, prlimit (and setpriv as root) present, and a trivial
 * sandboxed `true` succeeds (user namespaces may be disabled by the kernel or a container).
 */
export function sandboxAvailable(): { ok: boolean; reason?: string } {
  const bwrap = findTool("bwrap");
  if (bwrap === undefined) return { ok: false, reason: "bubblewrap (bwrap) is not installed" };
  if (findTool("prlimit") === undefined)
    return { ok: false, reason: "prlimit (util-linux) is not installed" };
  const setpriv = findTool("setpriv");
  if (isRoot() && setpriv === undefined)
    return { ok: false, reason: "setpriv (util-linux) is not installed" };
  let cmd: [string, string[]];
  let args: string[];
  try {
    cmd = launcher(bwrap, setpriv);
    args = bwrapArgs({ workspace: null, cwd: SANDBOX_WORKSPACE, argv: ["true"], limits: { processes: 64 } });
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  const res = spawnSync(cmd[0], [...cmd[1], ...args], {
    cwd: "/",
    env: { PATH: SAFE_PATH, LC_ALL: "C.UTF-8" },
    encoding: "utf8",
    timeout: 20_000,
  });
  if (res.error) return { ok: false, reason: `cannot run bwrap: ${res.error.message}` };
  if (res.status !== 0) {
    const why = (res.stderr || res.stdout || "").trim() || `exit status ${res.status ?? res.signal}`;
    return { ok: false, reason: `a trivial sandbox fails: ${why}` };
  }
  return { ok: true };
}

/**
 * Makes `dir` (under a workspace) a directory the build user may write: created if needed and,
 * when we are root, given to BUILD_UID. Files the worker itself puts in it may stay root's:
 * the build only reads them.
 */
export async function makeBuildDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (isRoot()) {
    await chown(dir, BUILD_UID, BUILD_GID);
    await chmod(dir, 0o755);
  }
}

/**
 * bwrap (started as BUILD_UID) must walk down to the workspace to bind it: every directory above
 * it needs search permission for that user. Checked here so the error names the culprit.
 */
function checkReachable(workspace: string): void {
  if (!isRoot()) return;
  for (let dir = path.dirname(workspace); ; dir = path.dirname(dir)) {
    const st = statSync(dir);
    const mode = st.mode;
    const ok =
      st.uid === BUILD_UID
        ? (mode & 0o100) !== 0
        : st.gid === BUILD_GID
          ? (mode & 0o010) !== 0
          : (mode & 0o001) !== 0;
    if (!ok) {
      throw new TaskFailure(
        "SANDBOX_UNAVAILABLE",
        `the build user (uid ${BUILD_UID}) cannot reach the workspace ${workspace}: ${dir} is not searchable by it (mode ${(mode & 0o7777).toString(8)}); put the worker's --work-dir where other users may pass (e.g. /var/lib/kiln-work)`,
        { infra: true },
      );
    }
    if (dir === "/") return;
  }
}

/**
 * Runs `argv` in the sandbox, streaming its output. Resolves once every process of the sandbox is
 * gone; rejects with TaskFailure("SANDBOX_UNAVAILABLE") when the sandbox cannot be set up.
 */
export async function runSandboxed(opts: SandboxOptions): Promise<SandboxOutcome> {
  const workspace = path.resolve(opts.workspace);
  const bwrap = findTool("bwrap");
  if (bwrap === undefined) {
    throw new TaskFailure("SANDBOX_UNAVAILABLE", "bubblewrap (bwrap) is not installed on this worker", {
      infra: true,
    });
  }
  let cmd: [string, string[]];
  try {
    cmd = launcher(bwrap, findTool("setpriv"), opts.privileged === true);
  } catch (err) {
    throw new TaskFailure("SANDBOX_UNAVAILABLE", (err as Error).message, { infra: true });
  }
  checkReachable(workspace);
  if (opts.root !== undefined && !opts.privileged) checkReachable(path.join(path.resolve(opts.root), "x"));
  await makeBuildDir(workspace);
  const args = bwrapArgs({ ...opts, workspace });

  const wall = new AbortController();
  const wallSeconds = opts.limits?.wallSeconds;
  let timedOut = false;
  const timer =
    wallSeconds === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          opts.onOutput(`\nkiln: the sandbox ran past its wall-time limit of ${wallSeconds} s; killing it\n`);
          wall.abort();
        }, wallSeconds * 1000);
  try {
    const outcome = await runProcess(cmd[0], [...cmd[1], ...args], {
      cwd: "/",
      env: { PATH: SAFE_PATH, LC_ALL: "C.UTF-8" },
      signal: AbortSignal.any([opts.signal, wall.signal]),
      onOutput: (text) => opts.onOutput(text),
      ...(opts.onStatus ? { onStatus: (text: string) => opts.onStatus?.(text) } : {}),
      killGrace: opts.killGrace,
    });
    return { ...outcome, timedOut };
  } finally {
    clearTimeout(timer);
  }
}
