import { randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BUILD_UID,
  bwrapArgs,
  runSandboxed,
  sandboxAvailable,
  type SandboxOptions,
} from "../../src/worker/sandbox.js";

const available = sandboxAvailable();
if (!available.ok) {
  if (process.env.CI === "true") throw new Error(`the bwrap sandbox is required in CI: ${available.reason}`);
  console.warn(`skipping sandbox tests: ${available.reason}`);
}
const asRoot = process.getuid?.() === 0;

let base: string;
let workspace: string;
beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "kiln-sandbox-"));
  await chmod(base, 0o755); // the build user must be able to reach the workspace
  workspace = path.join(base, "ws");
  await mkdir(workspace);
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

async function run(
  argv: SandboxOptions["argv"],
  opts: Partial<Omit<SandboxOptions, "argv" | "onOutput">> & {
    onOutput?: (text: string, all: string) => void;
  } = {},
) {
  let output = "";
  const { onOutput, ...rest } = opts;
  const outcome = await runSandboxed({
    workspace,
    cwd: "/build",
    signal: new AbortController().signal,
    killGrace: 1,
    ...rest,
    argv,
    onOutput: (text) => {
      output += text;
      onOutput?.(text, output);
    },
  });
  return { ...outcome, output };
}

/** Host processes whose environment carries `marker` (only sandboxed ones get it). */
function processesWithMarker(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (state === "Z" || state === "X") continue;
      if (
        readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`KILN_SANDBOX_MARK=${marker}`)
      ) {
        found.push(Number(entry));
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

describe("bwrapArgs", () => {
  it("uses a buildroot read-only as / for a build, with its own /tmp and no host directories", () => {
    const args = bwrapArgs({
      workspace: "/w/task-1-1",
      cwd: "/build",
      argv: ["true"],
      root: "/w/task-1-1.root/merged",
    });
    const joined = args.join(" ");
    expect(joined).toContain("--ro-bind /w/task-1-1.root/merged /");
    expect(joined).not.toMatch(/--ro-bind \/usr \/usr/);
    expect(joined).toContain("--perms 1777 --tmpfs /tmp");
    expect(joined).toContain("--bind /w/task-1-1 /build");
    expect(joined).toContain(`--unshare-user --disable-userns --uid ${BUILD_UID}`);
    expect(args).not.toContain("--share-net");
  });

  it("installs into a buildroot as real root with few capabilities, never without a root", () => {
    const args = bwrapArgs({
      workspace: "/w/task-1-1",
      cwd: "/",
      argv: ["apt-get", "update"],
      root: "/w/r",
      privileged: true,
      network: true,
    });
    const joined = args.join(" ");
    expect(joined).toContain("--bind /w/r /");
    expect(args).not.toContain("--unshare-user");
    expect(args).not.toContain("--unshare-net");
    expect(joined).toContain("--cap-drop ALL");
    expect(joined).toContain("--cap-add CAP_CHOWN");
    expect(joined).not.toContain("CAP_SYS_ADMIN");
    expect(joined).toContain("--ro-bind-try /etc/resolv.conf /etc/resolv.conf");
    expect(() => bwrapArgs({ workspace: "/w", cwd: "/", argv: ["true"], privileged: true })).toThrow(
      /privileged needs a root/,
    );
  });

  it("mounts the host read-only, the workspace at /build, and hides the workspace's siblings", () => {
    const args = bwrapArgs({ workspace: "/srv/kiln/work/task-1-1", cwd: "/build/src", argv: ["make"] });
    const joined = args.join(" ");
    expect(joined).toContain("--ro-bind /usr /usr");
    expect(joined).toContain("--tmpfs /srv/kiln/work --bind /srv/kiln/work/task-1-1 /build");
    expect(joined).toMatch(/--unshare-all --unshare-user .*--uid 1000 --gid 1000/);
    expect(args).not.toContain("--share-net");
    expect(args.slice(-2)).toEqual(["--", "make"]);
    expect(bwrapArgs({ workspace: "/w", cwd: "/build", argv: ["true"], network: true })).toContain(
      "--share-net",
    );
    const limited = bwrapArgs({
      workspace: "/w",
      cwd: "/build",
      argv: ["true"],
      limits: { processes: 10, memoryBytes: 1 << 30, fileSizeBytes: 1 << 20, wallSeconds: 5 },
    });
    expect(limited.slice(limited.indexOf("--") + 1)).toEqual([
      "prlimit",
      "--nproc=10",
      `--as=${1 << 30}`,
      `--fsize=${1 << 20}`,
      "--",
      "true",
    ]);
  });
});

describe.skipIf(!available.ok)("runSandboxed", () => {
  it("reports the sandbox available", () => {
    expect(available).toEqual({ ok: true });
  });

  it("keeps the host root read-only", async () => {
    const name = `kiln-sandbox-${randomUUID()}`;
    const out = await run([
      "sh",
      "-c",
      `touch /etc/${name}; touch /usr/${name}; touch /var/${name}; echo done`,
    ]);
    expect(out.exitCode).toBe(0);
    expect(out.output).toContain("Read-only file system");
    expect(out.output).toContain("done");
    for (const dir of ["/etc", "/usr", "/var"]) expect(existsSync(path.join(dir, name))).toBe(false);
  });

  it("lets the build write its workspace, as the build user", async () => {
    const out = await run(["sh", "-c", "echo hi > /build/made-inside && mkdir -p /build/sub/dir && echo ok"]);
    expect(out.exitCode).toBe(0);
    expect(readFileSync(path.join(workspace, "made-inside"), "utf8")).toBe("hi\n");
    if (asRoot) expect(statSync(path.join(workspace, "sub", "dir")).uid).toBe(BUILD_UID);
  });

  it("runs as uid and gid 1000 with no privileges", async () => {
    const out = await run([
      "sh",
      "-c",
      "id -u; id -g; grep ^CapEff /proc/self/status; cat /etc/shadow >/dev/null && echo SHADOW-READ",
    ]);
    expect(out.output).toMatch(/^1000\n1000\nCapEff:\s+0+\n/);
    // Started by root, the build is really uid 1000 on the host: root's 0640 files stay closed.
    if (asRoot) expect(out.output).not.toContain("SHADOW-READ");
  });

  it("gives the build a private /tmp, /run and /home", async () => {
    const hostFile = path.join(os.tmpdir(), `kiln-host-${randomUUID()}`);
    await writeFile(hostFile, "host");
    try {
      const inside = `/tmp/kiln-inside-${randomUUID()}`;
      const out = await run([
        "sh",
        "-c",
        `ls -A /tmp /run /home; test -e ${hostFile} && echo HOST-TMP-VISIBLE; echo x > ${inside} && echo wrote-tmp`,
      ]);
      expect(out.output).toContain("wrote-tmp");
      expect(out.output).not.toContain("HOST-TMP-VISIBLE");
      expect(out.output).not.toContain("postgresql"); // /run/postgresql holds a real server's socket here
      expect(existsSync(inside)).toBe(false);
    } finally {
      await rm(hostFile, { force: true });
    }
  });

  it("has no network unless asked for", async () => {
    const server = net.createServer((socket) => {
      socket.on("error", () => undefined); // the probe closes without reading
      socket.end("hello\n");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const probe = `exec 3<>/dev/tcp/127.0.0.1/${port} && echo CONNECTED || echo REFUSED`;
      const closed = await run(["bash", "-c", probe]);
      expect(closed.output).toContain("REFUSED");
      expect(closed.output).not.toContain("CONNECTED");
      const pg = await run([
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/5432 && echo CONNECTED || echo REFUSED",
      ]);
      expect(pg.output).toContain("REFUSED");
      // The same probe with the host's network reaches the server: the check above can fail.
      const open = await run(["bash", "-c", probe], { network: true });
      expect(open.output).toContain("CONNECTED");
    } finally {
      server.close();
    }
  });

  it("gives the command a clean environment", async () => {
    process.env.KILN_SANDBOX_LEAK = "secret";
    try {
      const out = await run(["env"], {
        env: { DEB_BUILD_OPTIONS: "nocheck", SOURCE_DATE_EPOCH: "1700000000" },
      });
      const env = Object.fromEntries(
        out.output
          .trim()
          .split("\n")
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      expect(env).toEqual({
        PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: "/build",
        PWD: "/build", // bwrap's --chdir sets it
        LC_ALL: "C.UTF-8",
        DEB_BUILD_OPTIONS: "nocheck",
        SOURCE_DATE_EPOCH: "1700000000",
      });
    } finally {
      delete process.env.KILN_SANDBOX_LEAK;
    }
  });

  it("limits the number of processes", async () => {
    const script = 'i=0; while [ $i -lt 60 ]; do sleep 3 & i=$((i+1)); done; echo "started $i"';
    const limited = await run(["sh", "-c", script], { limits: { processes: 20 } });
    expect(limited.exitCode).not.toBe(0);
    expect(limited.output).toContain("Cannot fork");
    expect(limited.output).not.toContain("started 60");
    const free = await run(["sh", "-c", script], { limits: { processes: 200 } });
    expect(free.output).toContain("started 60");
  });

  it("contains a fork bomb and kills it at the wall-time limit", async () => {
    const marker = randomUUID();
    const out = await run(["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 30"], {
      env: { KILN_SANDBOX_MARK: marker },
      limits: { processes: 64, wallSeconds: 3 },
    });
    expect(out.timedOut).toBe(true);
    expect(out.output).toContain("wall-time limit of 3 s");
    expect(out.output).toMatch(/fork: (retry: )?Resource temporarily unavailable/);
    expect(processesWithMarker(marker)).toEqual([]);
  });

  it("limits memory and file size", async () => {
    const mem = await run(["perl", "-e", '$x = "a" x (512 * 1024 * 1024); print "allocated\\n"'], {
      limits: { memoryBytes: 256 * 1024 * 1024 },
    });
    expect(mem.exitCode).not.toBe(0);
    expect(mem.output).toContain("Out of memory");
    expect(mem.output).not.toContain("allocated");

    const big = await run(["sh", "-c", "head -c 3000000 /dev/zero > /build/big"], {
      limits: { fileSizeBytes: 1_000_000 },
    });
    expect(big.exitCode).not.toBe(0);
    expect(statSync(path.join(workspace, "big")).size).toBeLessThanOrEqual(1_000_000);
  });

  it("kills the whole sandbox on abort, processes that left the group included", async () => {
    const marker = randomUUID();
    const controller = new AbortController();
    const out = await run(["sh", "-c", "sleep 300 & setsid sleep 300 & trap '' TERM; echo ready; wait"], {
      env: { KILN_SANDBOX_MARK: marker },
      signal: controller.signal,
      killGrace: 1,
      onOutput: (_text, all) => {
        if (all.includes("ready") && !controller.signal.aborted) {
          expect(processesWithMarker(marker).length).toBeGreaterThanOrEqual(3);
          controller.abort();
        }
      },
    });
    expect(controller.signal.aborted).toBe(true);
    expect(out.exitCode).toBeNull();
    expect(processesWithMarker(marker)).toEqual([]);
  });

  it("stops at the wall-time limit", async () => {
    const out = await run(["sleep", "60"], { limits: { wallSeconds: 1 } });
    expect(out.timedOut).toBe(true);
    expect(out.exitCode).toBeNull();
  });
});
