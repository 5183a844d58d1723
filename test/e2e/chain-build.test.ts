import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listTagRepos } from "../../src/builds/tag-repos.js";
import type { ChainBuildJson, CreateChainBuildRequest, TaskJson } from "../../src/client/types.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { runKiln, type KilnRun } from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/packages");
const hasBwrap = spawnSync("bwrap", ["--version"]).status === 0;
if (!hasBwrap && process.env.CI === "true")
  throw new Error("bwrap is required in CI (apt-get install bubblewrap)");
const ARCH = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();

/** The real CLI against the in-process hub. */
function kiln(t: TestHub, args: string[]): Promise<KilnRun> {
  return runKiln(t.url, t.adminToken, args);
}

/** A copy of a fixture with another version in debian/changelog: a build of its own. */
function withVersion(dir: string, fixture: string, version: string): string {
  const out = path.join(dir, `${fixture}-${version}`);
  cpSync(path.join(FIXTURES, fixture), out, { recursive: true });
  const changelog = path.join(out, "debian/changelog");
  writeFileSync(
    changelog,
    readFileSync(changelog, "utf8").replace(`${fixture} (1.0)`, `${fixture} (${version})`),
  );
  return out;
}

const ms = (iso: string | null) => (iso === null ? Number.NaN : Date.parse(iso));

describe.runIf(hasBwrap).each(dialects)("chain builds end to end on %s", (dialect) => {
  let t: TestHub;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-chain-e2e-"));
    t = await startTestHub(dialect, { worker: true });
    const a = t.admin;
    // Koji's layout: the build tag inherits the destination tag, so each group sees the last.
    await a.createTag({ name: "chain", arches: [ARCH] });
    await a.createTag({ name: "chain-build" });
    await a.addTagParent("chain-build", { parent: "chain", priority: 10 });
    await a.createTarget({ name: "chain-target", buildTag: "chain-build", destTag: "chain" });
    await a.changePackages("chain", {
      action: "add",
      packages: ["hello-all", "hello-c", "broken-c"],
      owner: "admin",
    });
    // The other way round: the destination tag inherits the build tag, which never sees it.
    await a.createTag({ name: "side-build", arches: [ARCH] });
    await a.createTag({ name: "side" });
    await a.addTagParent("side", { parent: "side-build", priority: 10 });
    await a.createTarget({ name: "side-target", buildTag: "side-build", destTag: "side" });
    // Inherited through a filter that lets only lib* packages through.
    await a.createTag({ name: "filt", arches: [ARCH] });
    await a.createTag({ name: "filt-build" });
    await a.addTagParent("filt-build", { parent: "filt", priority: 10, pkgFilter: "lib.*" });
    await a.createTarget({ name: "filt-target", buildTag: "filt-build", destTag: "filt" });
    await a.changePackages("filt", { action: "add", packages: ["hello-all"], owner: "admin" });
  }, 120_000);

  afterAll(async () => {
    await t?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("builds group 2 only once the build tag's repository holds group 1's builds", async () => {
    const out = await kiln(t, [
      "chain-build",
      "chain-target",
      path.join(FIXTURES, "hello-all"),
      ":",
      path.join(FIXTURES, "hello-c"),
      "--json",
    ]);
    expect(out.code, out.stderr).toBe(0);
    const report = JSON.parse(out.stdout) as ChainBuildJson;
    expect(report.task.state).toBe("closed");
    expect(report.builds.map((b) => [b.group, b.nvr, b.state])).toEqual([
      [1, "hello-all/1.0", "complete"],
      [2, "hello-c/1.0", "complete"],
    ]);
    expect(report.task.result).toEqual({
      builds: report.builds.map((b) => ({
        buildId: b.buildId,
        nvr: b.nvr,
        group: b.group,
        state: "complete",
      })),
    });
    // Progress went to stderr, group by group.
    expect(out.stderr).toMatch(/group 1\/2/);

    const [first, second] = report.builds;
    const subtasks = (await t.admin.listTasks({ parent: report.task.id, limit: 100 })).tasks;
    const byLabel = new Map(subtasks.map((s) => [s.label, s]));
    const build1 = byLabel.get("build-1-1")!;
    const wait = byLabel.get("repo-1")!;
    const build2 = byLabel.get("build-2-1")!;
    expect([build1.method, wait.method, build2.method]).toEqual(["build", "waitRepo", "build"]);
    expect(wait.state).toBe("closed");
    expect(wait.args).toMatchObject({ tag: "chain-build", builds: [first!.buildId] });
    // The chain ran from the top after each stage (as after a hub restart) and found what it had
    // made by label: two builds and one wait (none after the last group), nothing twice.
    expect(report.task.leaseEpoch).toBeGreaterThanOrEqual(3);
    expect(subtasks.map((s) => s.label).sort()).toEqual(["build-1-1", "build-2-1", "repo-1"]);
    expect(await t.admin.listBuilds({ package: "hello-all" })).toHaveLength(1);
    // In order: group 1 built, then the wait, then group 2 created.
    expect(ms(build1.completedAt)).toBeLessThanOrEqual(ms(wait.createdAt));
    expect(ms(wait.completedAt)).toBeLessThanOrEqual(ms(build2.createdAt));
    // A ready repo of the build tag held hello-all before hello-c's build was created.
    const repos = await listTagRepos(t.hub.deps.db.kysely, "chain-build");
    const holding = repos.filter((r) => r.builds.some((b) => b.buildId === first!.buildId) && r.readyAt);
    expect(holding.length).toBeGreaterThan(0);
    expect(Math.min(...holding.map((r) => ms(r.readyAt)))).toBeLessThanOrEqual(ms(build2.createdAt));
    // Both builds are tagged into the destination tag.
    expect((await t.admin.latestBuilds("chain")).map((b) => b.nvr).sort()).toEqual([
      "hello-all/1.0",
      "hello-c/1.0",
    ]);
    expect((await t.admin.getBuild(second!.buildId!)).tags).toEqual(["chain"]);
  });

  it("stops at a failed build with a report; the next group is never created", async () => {
    const later = withVersion(dir, "hello-c", "1.1");
    const out = await kiln(t, ["chain-build", "chain-target", path.join(FIXTURES, "broken-c"), ":", later]);
    expect(out.code).toBe(1);
    // The report: a table on stdout, the reason and the compiler's error on stderr.
    expect(out.stdout).toMatch(/broken-c\/1\.0\s+\d+\s+\d+\s+failed\s+BUILD_FAILED/);
    expect(out.stdout).toMatch(/hello-c\/1\.1\s+-\s+-\s+not started/);
    expect(out.stderr).toMatch(/\[BUILD_FAILED\]/);
    expect(out.stderr).toMatch(/never started: hello-c\/1\.1/);
    expect(out.stderr).toMatch(/kiln_undeclared_identifier|error/);

    const chainTask = (await t.admin.listTasks({ method: "chainBuild", limit: 10 })).tasks.find(
      (x: TaskJson) => x.state === "failed",
    )!;
    expect(chainTask.error?.code).toBe("BUILD_FAILED");
    expect(chainTask.error?.message).toMatch(/group 1 of 2 did not build; broken-c\/1\.0 failed/);
    const subtasks = (await t.admin.listTasks({ parent: chainTask.id, limit: 100 })).tasks;
    expect(subtasks.map((s) => s.label)).toEqual(["build-1-1"]);
    expect(await t.admin.listBuilds({ package: "hello-c" })).toHaveLength(1); // 1.0 only
    const report = await t.admin.getChainBuild(chainTask.id);
    expect(report.builds.map((b) => [b.nvr, b.state])).toEqual([
      ["broken-c/1.0", "failed"],
      ["hello-c/1.1", "not started"],
    ]);
    // Nothing will read the never-started group's source any more.
    const laterUpload = (chainTask.args as { groups: { upload: string }[][] }).groups[1]![0]!.upload;
    expect(existsSync(path.join(t.dataDir, "upload", laterUpload))).toBe(false);
  });

  it("refuses bad chains up front with stable codes, keeping nothing", async () => {
    const upload = async (src: string) => {
      const { id } = await t.admin.createUpload();
      const tar = execFileSync("tar", ["-czf", "-", "-C", src, "."]);
      await t.admin.uploadFile(id, "source.tar.gz", tar);
      return { upload: id, source: { type: "tarball" as const, file: "source.tar.gz" } };
    };
    /** A chain of these sources, each uploaded as the CLI does. */
    const chainOf = async (target: string, groups: string[][]) => {
      const req: CreateChainBuildRequest = { target, groups: [] };
      for (const g of groups) req.groups.push(await Promise.all(g.map(upload)));
      return req;
    };
    const refused = async (target: string, groups: string[][], code: string, message?: RegExp) => {
      const req = await chainOf(target, groups);
      await expect(t.admin.createChainBuild(req)).rejects.toMatchObject({
        code,
        ...(message ? { message: expect.stringMatching(message) as unknown } : {}),
      });
      // A refusal removes the uploads.
      for (const item of req.groups.flat()) {
        expect(existsSync(path.join(t.dataDir, "upload", item.upload))).toBe(false);
      }
    };
    const v2 = withVersion(dir, "hello-all", "2.0");
    const before = (await t.admin.listTasks({ method: "chainBuild", limit: 100 })).tasks.length;

    await refused("nope", [[v2]], "TARGET_NOT_FOUND");
    // The message says what to do.
    await refused(
      "side-target",
      [[v2]],
      "CHAIN_TARGET_UNUSABLE",
      /side-build does not inherit its destination tag side.*kiln tag add-parent side-build side/,
    );
    await refused("filt-target", [[v2]], "CHAIN_TARGET_UNUSABLE", /package filter that leaves out hello-all/);
    await refused("chain-target", [[v2], [v2]], "CHAIN_DUPLICATE_BUILD", /hello-all\/2\.0/);
    await refused("chain-target", [[path.join(FIXTURES, "hello-all")]], "BUILD_EXISTS");
    await refused("chain-target", [[v2], []], "VALIDATION_FAILED", /group 2 of the chain is empty/);
    await refused("chain-target", [], "VALIDATION_FAILED");
    // Nothing was queued or built.
    expect((await t.admin.listTasks({ method: "chainBuild", limit: 100 })).tasks).toHaveLength(before);
    expect(await t.admin.listBuilds({ package: "hello-all" })).toHaveLength(1);

    // A task that is not a chain is not one.
    const sleep = await t.admin.createTask({ method: "sleep", args: { seconds: 0 } });
    await expect(t.admin.getChainBuild(sleep.id)).rejects.toMatchObject({ code: "TASK_NOT_FOUND" });
  });
});
