/**
 * `kiln buildroot …` and `kiln tag edit --buildroot` as users run them: the real CLI (bin/kiln.js,
 * so `npm run build` first) against a hub in this process. The createBuildroot task is run by this
 * test through the worker API with a host token, as a worker would (no debootstrap here).
 */
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatBuildrootDetail, lastLine } from "../../src/cli/buildroot.js";
import { buildTagPatch } from "../../src/cli/tag.js";
import type { KilnClient } from "../../src/client/client.js";
import type { BuildrootDetailJson, BuildrootJson, TaskJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { runKiln, waitFor, type KilnRun } from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const MIRROR = "http://deb.debian.org/debian";

/** The real CLI against the test hub, as the admin. */
function kiln(t: TestHub, args: string[]): Promise<KilnRun> {
  return runKiln(t.url, t.adminToken, args, 60_000);
}

async function ok(t: TestHub, args: string[]): Promise<string> {
  const r = await kiln(t, args);
  expect(r.code, `kiln ${args.join(" ")}\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}

describe("buildroot output helpers", () => {
  it("takes the last non-empty line of a log chunk", () => {
    expect(lastLine("I: Retrieving Release\nI: Validating Packages\n\n")).toBe("I: Validating Packages");
    expect(lastLine("\n  \n")).toBeUndefined();
  });

  it("shows a base with its tags, saying which inherit it", () => {
    const base: BuildrootDetailJson = {
      id: 3,
      name: "bookworm",
      suite: "bookworm",
      mirror: MIRROR,
      arch: "amd64",
      include: ["curl"],
      state: "ready",
      sha256: "a".repeat(64),
      size: 1_500_000,
      info: { packages: 120, debootstrap: "1.0.128", apt: "2.6.1", installed: [] },
      taskId: 9,
      error: null,
      owner: "admin",
      createdAt: new Date(0).toISOString(),
      readyAt: new Date(60_000).toISOString(),
      deletedAt: null,
      tags: [
        { tag: "child", from: "parent" },
        { tag: "parent", from: "parent" },
      ],
    };
    const text = formatBuildrootDetail(base, 120_000);
    expect(text).toMatch(/^include\s+build-essential, fakeroot, curl$/m);
    expect(text).toMatch(/^packages\s+120$/m);
    expect(text).toContain("child (inherited from parent)");
    expect(text).not.toMatch(/^deleted/m);
  });

  it("turns --buildroot and --no-buildroot into the extra setting, refusing both ways at once", () => {
    expect(buildTagPatch({ buildroot: "bookworm" })).toEqual({ extra: { buildroot: "bookworm" } });
    expect(buildTagPatch({ buildroot: false })).toEqual({ extra: { buildroot: null } });
    expect(() => buildTagPatch({ buildroot: "a", extra: { buildroot: "b" } })).toThrow(KilnError);
    expect(() => buildTagPatch({ buildroot: false, removeExtra: ["buildroot"] })).toThrow(KilnError);
  });
});

// Each test spawns the CLI several times; on a loaded machine a spawn takes seconds.
const SLOW = { timeout: 180_000 };

for (const dialect of dialects) {
  describe(`kiln buildroot (${dialect})`, SLOW, () => {
    let t: TestHub;
    let worker: KilnClient;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      const host = await t.admin.addHost({
        name: `cli-br-${dialect}`,
        arches: ["amd64", "arm64", "riscv64"],
        channels: ["buildroot"],
      });
      worker = t.client(host.token);
      await worker.hello({ running: [], capabilities: [], version: "test" });
    });
    afterAll(async () => {
      await t?.cleanup();
    });

    /** Waits for the base's task to be queued, then runs it as a worker: closes it or fails it. */
    async function runTask(name: string, outcome: "close" | "fail"): Promise<BuildrootJson> {
      const base = await waitFor(
        `the ${name} base`,
        async () => {
          const all = await t.admin.listBuildroots();
          return all.find((b) => b.name === name);
        },
        90_000,
      );
      const claimed = await worker.claim(10);
      expect(claimed?.task.id).toBe(base.taskId);
      const { id } = claimed!.task;
      const epoch = claimed!.epoch;
      await worker.startTask(id, epoch);
      await worker.appendLog(id, epoch, 0, "I: Retrieving InRelease\n");
      if (outcome === "fail") {
        await worker.failTask(id, epoch, {
          code: "BUILDROOT_CREATE_FAILED",
          message: "E: Couldn't download dists/nosuch/InRelease",
        });
        return base;
      }
      const tarball = randomBytes(2048);
      await worker.uploadArtifact(id, epoch, `${name}.tar.zst`, tarball, { kind: "buildroot" });
      await worker.completeTask(id, epoch, {
        sha256: createHash("sha256").update(tarball).digest("hex"),
        size: tarball.length,
        info: { packages: 97, debootstrap: "1.0.128", apt: "2.6.1", installed: ["apt=2.6.1"] },
      });
      return base;
    }

    it("create --nowait queues the task; list and show print it as JSON", async () => {
      const created = JSON.parse(
        await ok(t, [
          "buildroot",
          "create",
          "queued",
          "--suite",
          "trixie",
          "--mirror",
          MIRROR,
          "--arch",
          "riscv64",
          "--include",
          "curl,git",
          "--include",
          "ca-certificates",
          "--nowait",
          "--json",
        ]),
      ) as { buildroot: BuildrootJson; task: TaskJson };
      expect(created.buildroot).toMatchObject({
        name: "queued",
        state: "building",
        arch: "riscv64",
        include: ["curl", "git", "ca-certificates"],
      });
      expect(created.task).toMatchObject({ method: "createBuildroot", channel: "buildroot", state: "free" });

      const listed = JSON.parse(await ok(t, ["buildroot", "list", "--json"])) as BuildrootJson[];
      expect(listed.map((b) => [b.name, b.state])).toEqual([["queued", "building"]]);
      const shown = JSON.parse(await ok(t, ["buildroot", "show", "queued", "--json"])) as BuildrootDetailJson;
      expect(shown).toMatchObject({ name: "queued", taskId: created.task.id, tags: [] });
      expect(await ok(t, ["buildroot", "list"])).toMatch(/queued\s+building\s+trixie\s+riscv64/);

      const plain = await ok(t, [
        "buildroot",
        "create",
        "queued2",
        "--suite",
        "trixie",
        "--mirror",
        MIRROR,
        "--arch",
        "riscv64",
        "--nowait",
      ]);
      expect(plain).toMatch(/kiln task watch \d+/);
      // Deleting them while queued cancels their tasks.
      expect(await ok(t, ["buildroot", "delete", "queued"])).toContain("Deleted buildroot base queued");
      await ok(t, ["buildroot", "delete", "queued2"]);
      expect((await t.admin.getTask(created.task.id)).state).toBe("canceled");
      expect(JSON.parse(await ok(t, ["buildroot", "list", "--json"]))).toEqual([]);
      const all = JSON.parse(await ok(t, ["buildroot", "list", "--all", "--json"])) as BuildrootJson[];
      expect(all.map((b) => b.state)).toEqual(["deleted", "deleted"]);
    });

    it("create waits for the task, then prints the base; a failure prints the task's error", async () => {
      const waiting = kiln(t, ["buildroot", "create", "waited", "--suite", "bookworm", "--mirror", MIRROR]);
      await runTask("waited", "close");
      const r = await waiting;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^state\s+ready$/m);
      expect(r.stdout).toMatch(/^packages\s+97$/m);
      expect(r.stdout).toMatch(/^sha256\s+[0-9a-f]{64}$/m);
      // No --arch: the hub's own architecture.
      const base = await t.admin.getBuildroot("waited");
      expect(["amd64", "arm64"]).toContain(base.arch);

      const failing = kiln(t, [
        "buildroot",
        "create",
        "doomed",
        "--suite",
        "nosuch",
        "--mirror",
        MIRROR,
        "--arch",
        "arm64",
        "--json",
      ]);
      const doomed = await runTask("doomed", "fail");
      const f = await failing;
      expect(f.code).toBe(1);
      expect(f.stderr).toContain(
        "making buildroot base doomed failed: E: Couldn't download dists/nosuch/InRelease",
      );
      expect(f.stderr).toContain(`kiln task logs ${doomed.taskId}`);
      expect((JSON.parse(f.stdout) as BuildrootJson).state).toBe("failed");
    });

    it("answers bad input and unknown names with stable codes and exit codes", async () => {
      const cases: [string[], number, string][] = [
        [["buildroot", "create", "bad/name", "--suite", "bookworm", "--mirror", MIRROR], 2, "INVALID_NAME"],
        [
          ["buildroot", "create", "x", "--suite", "bookworm", "--mirror", "ftp://m/debian"],
          2,
          "INVALID_MIRROR",
        ],
        [["buildroot", "create", "x", "--suite", "Sid!", "--mirror", MIRROR], 2, "INVALID_SUITE"],
        [
          ["buildroot", "create", "x", "--suite", "sid", "--mirror", MIRROR, "--arch", "x86_64"],
          2,
          "INVALID_ARCHITECTURE",
        ],
        [
          ["buildroot", "create", "x", "--suite", "sid", "--mirror", MIRROR, "--include", "Foo"],
          2,
          "INVALID_PACKAGE_NAME",
        ],
        [["buildroot", "create", "waited", "--suite", "sid", "--mirror", MIRROR], 4, "BUILDROOT_EXISTS"],
        [["buildroot", "show", "nope"], 3, "BUILDROOT_NOT_FOUND"],
        [["buildroot", "delete", "nope"], 3, "BUILDROOT_NOT_FOUND"],
        [["tag", "edit", "cli-parent", "--buildroot", "nope"], 3, "BUILDROOT_NOT_FOUND"],
      ];
      await t.admin.createTag({ name: "cli-parent" });
      for (const [args, exit, errCode] of cases) {
        const r = await kiln(t, args);
        expect(r.code, args.join(" ")).toBe(exit);
        expect(r.stderr, args.join(" ")).toContain(`[${errCode}]`);
      }
      const missing = await kiln(t, ["buildroot", "create", "x", "--mirror", MIRROR]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("--suite");
      expect((await t.admin.listBuildroots()).map((b) => b.name)).toEqual(["doomed", "waited"]);
    });

    it("tag edit --buildroot sets it, tag show tells where it comes from, delete needs --force", async () => {
      await t.admin.createTag({ name: "cli-child" });
      await t.admin.addTagParent("cli-child", { parent: "cli-parent", priority: 1 });
      await ok(t, ["tag", "edit", "cli-parent", "--buildroot", "waited"]);
      expect(await ok(t, ["tag", "show", "cli-parent"])).toMatch(/^buildroot\s+waited$/m);
      expect(await ok(t, ["tag", "show", "cli-child"])).toMatch(
        /^buildroot\s+waited \(inherited from cli-parent\)$/m,
      );
      const shown = JSON.parse(await ok(t, ["buildroot", "show", "waited", "--json"])) as BuildrootDetailJson;
      expect(shown.tags).toEqual([
        { tag: "cli-child", from: "cli-parent" },
        { tag: "cli-parent", from: "cli-parent" },
      ]);
      expect(await ok(t, ["buildroot", "show", "waited"])).toContain("cli-child (inherited from cli-parent)");

      const refused = await kiln(t, ["buildroot", "delete", "waited"]);
      expect(refused.code).toBe(4);
      expect(refused.stderr).toContain("[BUILDROOT_IN_USE]");
      await ok(t, ["tag", "edit", "cli-parent", "--no-buildroot"]);
      expect(await ok(t, ["tag", "show", "cli-child"])).toMatch(/^buildroot\s+none/m);
      await ok(t, ["tag", "edit", "cli-child", "--buildroot", "waited"]);
      await ok(t, ["buildroot", "delete", "waited", "--force"]);
      const gone = await kiln(t, ["buildroot", "show", "waited"]);
      expect(gone.code).toBe(3);
      expect(gone.stderr).toContain("was deleted");
    });
  });
}
