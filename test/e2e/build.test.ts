import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { createPgDatabase, DIALECTS, postgresAvailable } from "../helpers/db.js";
import {
  freePort,
  runKiln,
  startHubProcess,
  startWorkerProcess,
  stop,
  waitFor,
  type HubProc,
  type KilnRun,
  type Proc,
} from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/packages");
const hasBwrap = spawnSync("bwrap", ["--version"]).status === 0;
if (!hasBwrap && process.env.CI === "true")
  throw new Error("bwrap is required in CI (apt-get install bubblewrap)");
const ARCH = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();

/** The real CLI, run asynchronously (see runKiln). */
function kiln(hub: HubProc, args: string[]): Promise<KilnRun> {
  return runKiln(hub.url, hub.token, args);
}

/** Processes (of any sandbox) whose environment carries the marker slow-c's build sets. */
function markedProcesses(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (
        readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes("KILN_TEST_MARK=slow-c-build")
      ) {
        pids.push(Number(entry));
      }
    } catch {
      // gone, or a zombie
    }
  }
  return pids;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return err.code;
    throw err;
  }
  return "no error";
}

describe.runIf(hasBwrap).each(dialects)("building Debian packages end to end on %s", (dialect) => {
  let dir: string;
  let hub: HubProc;
  const procs: Proc[] = [];
  let dropDb: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-build-e2e-"));
    // Like a data dir a person makes: others may traverse it (the sandbox's uid must reach its workspace).
    chmodSync(dir, 0o755);
    let db: string | undefined;
    if (dialect === "postgres") {
      const pg = await createPgDatabase();
      db = pg.url;
      dropDb = () => pg.drop();
    }
    hub = await startHubProcess({
      dataDir: path.join(dir, "data"),
      port: await freePort(),
      worker: true,
      workerName: `builder-${dialect}`,
      toml: `upload_limit_bytes = ${8 * 1024 * 1024}`,
      ...(db ? { db } : {}),
    });
    procs.push(hub);
    await hub.admin.createTag({ name: "dist-build", arches: [ARCH] });
    await hub.admin.createTag({ name: "dist" });
    await hub.admin.addTagParent("dist", { parent: "dist-build", priority: 10 });
    await hub.admin.createTarget({ name: "dist-target", buildTag: "dist-build", destTag: "dist" });
    await hub.admin.changePackages("dist", {
      action: "add",
      packages: [
        "hello-c",
        "hello-all",
        "broken-c",
        "needs-missing-dep",
        "net-escape",
        "write-escape",
        "slow-c",
      ],
      owner: "admin",
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(procs.map((p) => stop(p, "SIGKILL")));
    await dropDb?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it("builds a C package with debhelper; the .deb has the right control fields and files", async () => {
    const out = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, "hello-c")]);
    expect(out.code, out.stderr).toBe(0);
    const info = JSON.parse((await kiln(hub, ["build-info", "hello-c/1.0", "--json"])).stdout) as BuildJson;
    expect(info.state).toBe("complete");
    expect(info.arches.map((a) => [a.arch, a.state])).toEqual([[ARCH, "closed"]]);
    expect(info.tags).toEqual(["dist"]);
    const debs = info.artifacts.filter((a) => a.kind === "deb");
    // dh also makes a -dbgsym package; it is an artifact like any other.
    expect(debs.map((d) => d.name).filter((n) => !n.includes("-dbgsym"))).toEqual([
      `hello-c_1.0_${ARCH}.deb`,
    ]);
    expect(info.artifacts.map((a) => a.kind)).toEqual(
      expect.arrayContaining(["dsc", "buildinfo", "changes"]),
    );

    const dl = path.join(dir, "download");
    const got = await kiln(hub, ["download", "hello-c/1.0", "-o", dl]);
    expect(got.code, got.stderr).toBe(0);
    const deb = path.join(dl, `hello-c_1.0_${ARCH}.deb`);
    const fields = execFileSync("dpkg-deb", ["-f", deb, "Package", "Version", "Architecture"], {
      encoding: "utf8",
    });
    expect(fields).toBe(`Package: hello-c\nVersion: 1.0\nArchitecture: ${ARCH}\n`);
    const root = path.join(dir, "root");
    execFileSync("dpkg", ["-x", deb, root]);
    expect(execFileSync(path.join(root, "usr/bin/hello-c"), { encoding: "utf8" })).toMatch(/hello/i);

    const latest = await hub.admin.latestBuilds("dist");
    expect(latest.map((b) => b.nvr)).toContain("hello-c/1.0");
    // The same source and version again is refused before any task runs; --scratch is not.
    const again = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, "hello-c"), "--nowait"]);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/BUILD_EXISTS/);
    const scratch = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, "hello-c"), "--scratch"]);
    expect(scratch.code, scratch.stderr).toBe(0);
  });

  it("builds an Architecture: all package once", async () => {
    const out = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, "hello-all")]);
    expect(out.code, out.stderr).toBe(0);
    const info = await hub.admin.getBuild("hello-all/1.0");
    expect(info.arches.map((a) => a.arch)).toEqual(["all"]);
    expect(info.artifacts.filter((a) => a.kind === "deb").map((a) => a.name)).toEqual([
      "hello-all_1.0_all.deb",
    ]);
  });

  it("fails a compile error with the compiler's message in the log", async () => {
    const out = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, "broken-c")]);
    expect(out.code).toBe(1);
    const info = await hub.admin.getBuild("broken-c/1.0");
    expect(info.state).toBe("failed");
    const failed = info.arches.find((a) => a.state === "failed");
    expect(failed).toBeDefined();
    expect(await hub.admin.taskLog(failed!.taskId)).toMatch(/error/);
    expect(out.stderr + out.stdout).toMatch(/error/);
  });

  it("fails missing Build-Depends at once, naming them", async () => {
    const out = await kiln(hub, [
      "build",
      "dist-target",
      path.join(FIXTURES, "needs-missing-dep"),
      "--nowait",
      "--json",
    ]);
    expect(out.code, out.stderr).toBe(0);
    const { task } = JSON.parse(out.stdout) as { task: { id: number } };
    const done = await waitFor(
      "the build to end",
      async () => {
        const t = await hub.admin.getTask(task.id);
        return t.state === "failed" ? t : undefined;
      },
      120_000,
    );
    expect(done.error?.code).toBe("BUILD_DEPS_MISSING");
    expect(done.error?.message).toMatch(/libdoesnotexist-dev/);
  });

  it("fails a build that reaches for the network or writes outside its workspace", async () => {
    for (const pkg of ["net-escape", "write-escape"]) {
      const out = await kiln(hub, ["build", "dist-target", path.join(FIXTURES, pkg)]);
      expect(out.code, `${pkg}: ${out.stderr}`).toBe(1);
      expect((await hub.admin.getBuild(`${pkg}/1.0`)).state).toBe("failed");
    }
    expect(existsSync("/etc/kiln-escape")).toBe(false);
  });

  it("refuses bad input with stable codes and stores nothing", async () => {
    const before = (await hub.admin.listBuilds({ limit: 1000 })).length;
    const nodeb = path.join(dir, "no-debian");
    mkdirSync(nodeb, { recursive: true });
    writeFileSync(path.join(nodeb, "README"), "x");
    const r1 = await kiln(hub, ["build", "dist-target", nodeb]);
    expect(r1.code).toBe(2);

    const upload = async (name: string, content: Buffer) => {
      const { id } = await hub.admin.createUpload();
      await hub.admin.uploadFile(id, name, content);
      return id;
    };
    const tarOf = (src: string, extra: string[] = []) =>
      execFileSync("tar", ["-czf", "-", ...extra, "-C", src, "."]);
    expect(
      await code(
        hub.admin.createBuild({
          target: "nope",
          upload: await upload("s.tar.gz", tarOf(path.join(FIXTURES, "hello-c"))),
          source: { type: "tarball", file: "s.tar.gz" },
        }),
      ),
    ).toBe("TARGET_NOT_FOUND");

    const unlisted = path.join(dir, "unlisted");
    cpSync(path.join(FIXTURES, "hello-c"), unlisted, { recursive: true });
    const changelog = path.join(unlisted, "debian/changelog");
    const text = execFileSync("sed", ["s/^hello-c (/unlisted-pkg (/", changelog], { encoding: "utf8" });
    writeFileSync(changelog, text);
    expect(
      await code(
        hub.admin.createBuild({
          target: "dist-target",
          upload: await upload("s.tar.gz", tarOf(unlisted)),
          source: { type: "tarball", file: "s.tar.gz" },
        }),
      ),
    ).toBe("PACKAGE_NOT_LISTED");

    writeFileSync(changelog, "this is not a changelog\n");
    expect(
      await code(
        hub.admin.createBuild({
          target: "dist-target",
          upload: await upload("s.tar.gz", tarOf(unlisted)),
          source: { type: "tarball", file: "s.tar.gz" },
        }),
      ),
    ).toBe("CHANGELOG_INVALID");

    // A tarball whose paths climb out of the tree.
    const evil = path.join(dir, "evil");
    mkdirSync(path.join(evil, "inner/debian"), { recursive: true });
    writeFileSync(path.join(evil, "x"), "x");
    const evilTar = execFileSync("tar", [
      "-czf",
      "-",
      "-C",
      path.join(evil, "inner"),
      "--transform",
      "s,^\\.,..,",
      ".",
    ]);
    const evilTar2 = execFileSync("tar", ["-czf", "-", "-P", path.join(evil, "x")]);
    expect(
      await code(
        hub.admin.createBuild({
          target: "dist-target",
          upload: await upload("s.tar.gz", evilTar),
          source: { type: "tarball", file: "s.tar.gz" },
        }),
      ),
    ).toBe("ARCHIVE_UNSAFE");
    expect(
      await code(
        hub.admin.createBuild({
          target: "dist-target",
          upload: await upload("s.tar.gz", evilTar2),
          source: { type: "tarball", file: "s.tar.gz" },
        }),
      ),
    ).toBe("ARCHIVE_UNSAFE");

    // Over the hub's upload limit (8 MiB here).
    const { id } = await hub.admin.createUpload();
    expect(await code(hub.admin.uploadFile(id, "big.tar.gz", Buffer.alloc(9 * 1024 * 1024)))).toBe(
      "PAYLOAD_TOO_LARGE",
    );

    expect((await hub.admin.listBuilds({ limit: 1000 })).length).toBe(before);
    // Refused uploads are gone, not left behind.
    const areas = readdirSync(path.join(dir, "data/upload"));
    for (const a of areas)
      expect(readdirSync(path.join(dir, "data/upload", a)).filter((f) => f === "s.tar.gz")).toEqual([]);
  });

  it("reruns an arch elsewhere after kill -9 of its worker, with no duplicate build or artifact", async () => {
    await hub.admin.editHost(`builder-${dialect}`, { enabled: false });
    try {
      const hosts = ["wa", "wb"].map((n) => `${n}-${dialect}`);
      const tokens: string[] = [];
      for (const name of hosts)
        tokens.push((await hub.admin.addHost({ name, arches: [ARCH], capacity: 2 })).token);
      const wa = startWorkerProcess(hub.url, tokens[0]!, path.join(dir, "wa"));
      procs.push(wa);
      const out = await kiln(hub, [
        "build",
        "dist-target",
        path.join(FIXTURES, "slow-c"),
        "--nowait",
        "--json",
      ]);
      expect(out.code, out.stderr).toBe(0);
      const { task } = JSON.parse(out.stdout) as { task: { id: number } };
      await waitFor("slow-c compiling", () => markedProcesses().length > 0, 120_000);
      wa.child.kill("SIGKILL");
      await wa.exited;
      await waitFor("the sandbox to die with its worker", () => markedProcesses().length === 0, 20_000);
      procs.push(startWorkerProcess(hub.url, tokens[1]!, path.join(dir, "wb")));
      const done = await waitFor(
        "the build to end",
        async () => {
          const t = await hub.admin.getTask(task.id);
          return t.state === "closed" || t.state === "failed" ? t : undefined;
        },
        180_000,
      ).catch(async (err: unknown) => {
        console.error(
          JSON.stringify({
            tasks: (await hub.admin.listTasks({ limit: 20 })).tasks.map((t) => [
              t.id,
              t.method,
              t.state,
              t.hostId,
              t.attempts,
              t.error?.code,
            ]),
            hosts: await hub.admin.listHosts(),
          }),
        );
        throw err;
      });
      expect(done.state, JSON.stringify(done.error)).toBe("closed");
      const info = await hub.admin.getBuild("slow-c/1.0");
      expect(info.state).toBe("complete");
      const arch = await hub.admin.getTask(info.arches[0]!.taskId);
      expect(arch.attempts).toBeGreaterThanOrEqual(2);
      expect(arch.host).toBe(hosts[1]);
      const names = info.artifacts.map((a) => a.name);
      expect(new Set(names).size).toBe(names.length);
      expect(names.filter((n) => n.endsWith(".deb") && !n.includes("-dbgsym"))).toEqual([
        `slow-c_1.0_${ARCH}.deb`,
      ]);
      expect((await hub.admin.listBuilds({ package: "slow-c" })).length).toBe(1);
    } finally {
      await hub.admin.editHost(`builder-${dialect}`, { enabled: true });
    }
  }, 240_000);

  it("cancel stops the compiler", async () => {
    const out = await kiln(hub, [
      "build",
      "dist-target",
      path.join(FIXTURES, "slow-c"),
      "--scratch",
      "--nowait",
      "--json",
    ]);
    expect(out.code, out.stderr).toBe(0);
    const { task } = JSON.parse(out.stdout) as { task: { id: number } };
    await waitFor("slow-c compiling", () => markedProcesses().length > 0, 120_000);
    const cancel = await kiln(hub, ["task", "cancel", String(task.id)]);
    expect(cancel.code, cancel.stderr).toBe(0);
    await waitFor("the compiler to stop", () => markedProcesses().length === 0, 30_000);
    const build = (await hub.admin.listBuilds({ package: "slow-c" })).find((b) => b.scratch);
    expect(build?.state).toBe("canceled");
  });
});
