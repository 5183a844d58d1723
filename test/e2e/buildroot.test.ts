/**
 * Issue 7 end to end: a base made by debootstrap on a worker, builds in fresh buildroots that
 * install their Build-Depends from the mirror and the build tag's repo, the base cache, and the
 * faults (unknown suite, unreachable mirror, damaged cache, deleted base). Real debootstrap from
 * this machine's own apt mirror (about a minute), real apt, dpkg-buildpackage and bwrap.
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildJson, BuildrootJson } from "../../src/client/types.js";
import { mountsUnder } from "../../src/worker/buildroot-mount.js";
import { createPgDatabase, DIALECTS, postgresAvailable } from "../helpers/db.js";
import { freePort, runKiln, startHubProcess, stop, type HubProc } from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/packages");
const ARCH = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
const tools = ["bwrap", "debootstrap", "zstd"].filter(
  (t) => spawnSync("sh", ["-c", `command -v ${t} || test -x /usr/sbin/${t}`]).status !== 0,
);
const isRoot = process.getuid?.() === 0;
if (process.env.CI === "true" && (tools.length > 0 || !isRoot))
  throw new Error(`buildroot tests need root and ${tools.join(", ") || "nothing more"} in CI`);

/** The Debian mirror this machine's apt uses (a deb822 or one-line source). */
function systemMirror(): string {
  if (process.env.KILN_TEST_MIRROR) return process.env.KILN_TEST_MIRROR;
  const texts: string[] = [];
  for (const f of ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"]) {
    if (existsSync(f)) texts.push(readFileSync(f, "utf8"));
  }
  const text = texts.join("\n");
  const m = /^URIs:\s*(\S+)/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main/m.exec(text);
  return (m?.[1] ?? "http://deb.debian.org/debian").replace(/\/+$/, "");
}

function kiln(hub: HubProc, args: string[]) {
  return runKiln(hub.url, hub.token, args, 400_000);
}

/** A copy of a fixture with another version in its changelog. */
function bumped(dir: string, name: string, version: string): string {
  const out = path.join(dir, `${name}-${version}`);
  cpSync(path.join(FIXTURES, name), out, { recursive: true });
  const changelog = path.join(out, "debian", "changelog");
  writeFileSync(changelog, readFileSync(changelog, "utf8").replace(/^(\S+) \(1\.0\)/, `$1 (${version})`));
  return out;
}

describe.runIf(tools.length === 0 && isRoot).each(dialects)(
  "building in buildroots end to end on %s",
  (dialect) => {
    let dir: string;
    let hub: HubProc;
    let dropDb: (() => Promise<void>) | undefined;
    let workerDir: string;
    const mirror = systemMirror();

    beforeAll(async () => {
      dir = mkdtempSync(path.join(os.tmpdir(), "kiln-buildroot-e2e-"));
      chmodSync(dir, 0o755);
      let db: string | undefined;
      if (dialect === "postgres") {
        const pg = await createPgDatabase();
        db = pg.url;
        dropDb = () => pg.drop();
      }
      hub = await startHubProcess({
        ...(db ? { db } : {}),
        dataDir: path.join(dir, "data"),
        port: await freePort(),
        worker: true,
        workerName: `rootbuilder-${dialect}`,
      });
      workerDir = path.join(dir, "data", "work", "worker");
      const admin = hub.admin;
      // dest ← build-a (inherits dest: sees what is built); build-b does not inherit dest.
      await admin.createTag({ name: "dest", arches: [ARCH] });
      await admin.createTag({ name: "build-a", arches: [ARCH] });
      await admin.addTagParent("build-a", { parent: "dest", priority: 10 });
      await admin.createTag({ name: "dest-b", arches: [ARCH] });
      await admin.createTag({ name: "build-b", arches: [ARCH] });
      await admin.createTag({ name: "host-dest", arches: [ARCH] });
      await admin.createTarget({ name: "t-a", buildTag: "build-a", destTag: "dest" });
      await admin.createTarget({ name: "t-b", buildTag: "build-b", destTag: "dest-b" });
      await admin.createTarget({ name: "t-host", buildTag: "host-dest", destTag: "host-dest" });
      for (const tag of ["dest", "dest-b", "host-dest"]) {
        await admin.changePackages(tag, {
          action: "add",
          packages: ["kilnfoo", "kilnfoo-user", "host-leak"],
          owner: "admin",
        });
      }
    }, 120_000);

    afterAll(async () => {
      await stop(hub, "SIGKILL");
      await dropDb?.();
      // A killed worker can leave a build root mounted: never remove through a mount.
      for (const m of await mountsUnder(dir)) spawnSync("umount", ["-l", m]);
      rmSync(dir, { recursive: true, force: true });
    });

    /** Nothing of a build's root is left behind: no `.root` directory, nothing mounted. */
    async function expectNoLeftovers(): Promise<void> {
      const left = existsSync(workerDir) ? readdirSync(workerDir).filter((e) => e.startsWith("task-")) : [];
      expect(left).toEqual([]);
      expect(await mountsUnder(workerDir)).toEqual([]);
    }

    it("makes a base with debootstrap on a buildroot worker and stores it by content", async () => {
      const out = await kiln(hub, [
        "buildroot",
        "create",
        "bookworm",
        "--suite",
        "bookworm",
        "--mirror",
        mirror,
      ]);
      expect(out.code, out.stderr + out.stdout).toBe(0);
      const shown = await kiln(hub, ["buildroot", "show", "bookworm", "--json"]);
      const base = JSON.parse(shown.stdout) as BuildrootJson;
      expect(base.state).toBe("ready");
      expect(base.sha256).toMatch(/^[0-9a-f]{64}$/);
      const blob = path.join(
        dir,
        "data",
        "blobs",
        "sha256",
        base.sha256!.slice(0, 2),
        base.sha256!.slice(2, 4),
      );
      expect(readdirSync(blob).some((f) => f.startsWith(base.sha256!))).toBe(true);
      const installed = (base.info as { installed: string[] }).installed;
      expect(installed.some((p) => p.startsWith("build-essential="))).toBe(true);
      expect(installed.some((p) => p.startsWith("fakeroot="))).toBe(true);
      const task = await hub.admin.getTask(base.taskId!);
      expect(task.channel).toBe("buildroot");
      await expectNoLeftovers();
    }, 600_000);

    it("refuses an unknown suite and an unreachable mirror with debootstrap's reason, leaving nothing", async () => {
      const suite = await kiln(hub, [
        "buildroot",
        "create",
        "nosuite",
        "--suite",
        "nosuchsuite",
        "--mirror",
        mirror,
      ]);
      expect(suite.code).not.toBe(0);
      expect(suite.stderr + suite.stdout).toMatch(/BUILDROOT_CREATE_FAILED/);
      expect(suite.stderr + suite.stdout).toMatch(/nosuchsuite/);
      const far = await kiln(hub, [
        "buildroot",
        "create",
        "nomirror",
        "--suite",
        "bookworm",
        "--mirror",
        "http://127.0.0.1:9/debian",
      ]);
      expect(far.code).not.toBe(0);
      expect(far.stderr + far.stdout).toMatch(/BUILDROOT_CREATE_FAILED/);
      expect(far.stderr + far.stdout).toMatch(/mirror/);
      for (const name of ["nosuite", "nomirror"]) {
        const b = JSON.parse(
          (await kiln(hub, ["buildroot", "show", name, "--json"])).stdout,
        ) as BuildrootJson;
        expect(b.state).toBe("failed");
        expect(b.sha256).toBeNull();
      }
      await expectNoLeftovers();
    }, 300_000);

    it("builds against a library Kiln built a moment before, and fails where the tag does not inherit it", async () => {
      for (const tag of ["build-a", "build-b"]) {
        const edit = await kiln(hub, ["tag", "edit", tag, "--buildroot", "bookworm"]);
        expect(edit.code, edit.stderr).toBe(0);
      }
      const lib = await kiln(hub, ["build", "t-a", path.join(FIXTURES, "kilnfoo")]);
      expect(lib.code, lib.stderr + lib.stdout).toBe(0);

      // build-b has the same base but not dest: its repo has no libkilnfoo-dev.
      const missing = await kiln(hub, ["build", "t-b", path.join(FIXTURES, "kilnfoo-user")]);
      expect(missing.code).not.toBe(0);
      const failed = await hub.admin.getBuild("kilnfoo-user/1.0");
      expect(failed.state).toBe("failed");
      const task = await hub.admin.getTask(failed.taskId!);
      expect(task.error?.code).toBe("BUILD_DEPS_MISSING");
      // apt's own explanation names the package.
      expect(task.error?.message).toMatch(/libkilnfoo-dev/);
      expect(task.error?.message).toMatch(/not installable|unmet dependencies|Unable to locate/);

      const waited = await kiln(hub, ["wait-repo", "build-a", "--build", "kilnfoo/1.0", "--json"]);
      expect(waited.code, waited.stderr).toBe(0);
      const user = await kiln(hub, ["build", "t-a", path.join(FIXTURES, "kilnfoo-user")]);
      expect(user.code, user.stderr + user.stdout).toBe(0);
      const info = JSON.parse(
        (await kiln(hub, ["build-info", "kilnfoo-user/1.0", "--json"])).stdout,
      ) as BuildJson;
      expect(info.state).toBe("complete");
      expect(info.buildroot?.name).toBe("bookworm");
      const resolved = info.buildroot?.arches[ARCH]?.installed ?? [];
      expect(resolved).toContainEqual({ package: "libkilnfoo-dev", version: "1.0", arch: ARCH });
      const text = await kiln(hub, ["build-info", "kilnfoo-user/1.0"]);
      expect(text.stdout).toMatch(/libkilnfoo-dev\s+1\.0/);

      // The program was really linked against the library from the tag repo.
      const dl = path.join(dir, "dl-user");
      expect((await kiln(hub, ["download", "kilnfoo-user/1.0", "-o", dl])).code).toBe(0);
      const unpacked = path.join(dir, "user-root");
      execFileSync("dpkg", ["-x", path.join(dl, `kilnfoo-user_1.0_${ARCH}.deb`), unpacked]);
      expect(execFileSync(path.join(unpacked, "usr/bin/kilnfoo-user"), { encoding: "utf8" })).toMatch(
        /Hello from libkilnfoo!/,
      );
      await expectNoLeftovers();
    }, 600_000);

    it("chain-builds a library and its user in order through the tag repo", async () => {
      const out = await kiln(hub, [
        "chain-build",
        "t-a",
        bumped(dir, "kilnfoo", "2.0"),
        ":",
        bumped(dir, "kilnfoo-user", "2.0"),
      ]);
      expect(out.code, out.stderr + out.stdout).toBe(0);
      const info = await hub.admin.getBuild("kilnfoo-user/2.0");
      expect(info.state).toBe("complete");
      expect(info.buildroot?.arches[ARCH]?.installed).toContainEqual({
        package: "libkilnfoo-dev",
        version: "2.0",
        arch: ARCH,
      });
    }, 600_000);

    it("lets nothing installed on the worker's host leak into a buildroot build", async () => {
      // zstd is on this host but not in the base: the undeclared use works only on the host.
      const onHost = await kiln(hub, ["build", "t-host", path.join(FIXTURES, "host-leak")]);
      expect(onHost.code, onHost.stderr + onHost.stdout).toBe(0);
      const inRoot = await kiln(hub, ["build", "t-a", path.join(FIXTURES, "host-leak"), "--scratch"]);
      expect(inRoot.code).not.toBe(0);
      const builds = await hub.admin.listBuilds({ package: "host-leak" });
      const scratch = builds.find((b) => b.scratch);
      expect(scratch?.state).toBe("failed");
      const arch = (await hub.admin.getBuild(scratch!.id)).arches[0]!;
      expect(await hub.admin.taskLog(arch.taskId)).toMatch(
        /zstd: (command )?not found|zstd: No such file or directory/,
      );
      await expectNoLeftovers();
    }, 300_000);

    it("uses the cached base without a second debootstrap, and fetches a damaged one again", async () => {
      const { tasks } = await hub.admin.listTasks({ method: "createBuildroot" });
      // bookworm, nosuite, nomirror: one each; builds never made a base.
      expect(tasks.length).toBe(3);
      const user = await hub.admin.getBuild("kilnfoo-user/1.0");
      expect(user.buildroot?.arches[ARCH]?.base).toBe("cached");

      const base = JSON.parse(
        (await kiln(hub, ["buildroot", "show", "bookworm", "--json"])).stdout,
      ) as BuildrootJson;
      const tarball = path.join(workerDir, "buildroot-cache", base.sha256!, "base.tar.zst");
      expect(existsSync(tarball)).toBe(true);
      appendFileSync(tarball, "bit rot");
      const out = await kiln(hub, ["build", "t-a", path.join(FIXTURES, "kilnfoo"), "--scratch"]);
      expect(out.code, out.stderr + out.stdout).toBe(0);
      const builds = await hub.admin.listBuilds({ package: "kilnfoo" });
      const scratch = await hub.admin.getBuild(builds.find((b) => b.scratch)!.id);
      expect(scratch.buildroot?.arches[ARCH]?.base).toBe("fetched");
      expect(await hub.admin.taskLog(scratch.arches[0]!.taskId)).toMatch(
        /does not match its hash; fetching it again/,
      );
      await expectNoLeftovers();
    }, 300_000);

    it("fails a build whose tag names a deleted base, clearly and with nothing half-built", async () => {
      // Tags still name it: refused, unless forced.
      const refused = await kiln(hub, ["buildroot", "delete", "bookworm"]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/BUILDROOT_IN_USE/);
      const del = await kiln(hub, ["buildroot", "delete", "bookworm", "--force"]);
      expect(del.code, del.stderr).toBe(0);
      const out = await kiln(hub, ["build", "t-a", path.join(FIXTURES, "kilnfoo-user"), "--scratch"]);
      expect(out.code).not.toBe(0);
      expect(out.stderr + out.stdout).toMatch(/BUILDROOT_NOT_FOUND|bookworm/);
      const builds = await hub.admin.listBuilds({ package: "kilnfoo-user" });
      const last = builds.filter((b) => b.scratch).at(-1)!;
      const task = await hub.admin.getTask(last.taskId!);
      expect(task.error?.code).toBe("BUILDROOT_NOT_FOUND");
      await expectNoLeftovers();
    }, 300_000);
  },
);
