/**
 * Tag repos (Koji's repos and kojira) on a real hub in this process, on each dialect: generation
 * through inheritance, the states, deduplication, the tracker, waitRepo, serving to a real
 * apt-get, and what happens across a restart.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KilnClient } from "../../src/client/client.js";
import type { TagRepoJson, TaskDetailJson } from "../../src/client/types.js";
import { classifyEvents } from "../../src/builds/tag-repo-tracker.js";
import {
  currentTagRepo,
  ensureTagRepo,
  listTagRepos,
  newRepoLock,
  newRepoTasks,
  pinTagRepo,
  queueNewRepo,
  repoHasBuilds,
  tagRepoSourcesLine,
} from "../../src/builds/tag-repos.js";
import { tagBuild } from "../../src/builds/tag-store.js";
import { DEFAULT_ENGINE, type HubConfig } from "../../src/config/config.js";
import { openDatabase, withWriteTx } from "../../src/db/database.js";
import { recordEvent } from "../../src/events/outbox.js";
import type { HubDeps } from "../../src/hub/deps.js";
import { startHub, type Hub } from "../../src/hub/server.js";
import { createTask } from "../../src/tasks/create-task.js";
import { systemClock } from "../../src/tasks/deps.js";
import { AptClient } from "../helpers/apt.js";
import { createPgDatabase, DIALECTS, postgresAvailable, silentLog } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { waitFor } from "../helpers/procs.js";
import { seedBuild } from "../helpers/seed-build.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const haveApt = spawnSync("apt-get", ["--version"], { stdio: "ignore" }).status === 0;
if (!haveApt && process.env.CI === "true") throw new Error("apt-get is required in CI");
if (!haveApt) console.warn("skipping the apt-get reads of tag repos: apt-get is not installed");

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("which tags a batch of events concerns (pure)", () => {
  const ev = (type: string, data: Record<string, unknown>) => ({ type, data: JSON.stringify(data) });
  it("names changed tags, asks for everything on a new target, and cleans up when builds end", () => {
    const c = classifyEvents([
      ev("tag.build_added", { tag: "base", buildId: 3 }),
      ev("package.block", { tag: "child", packages: ["x"] }),
      ev("build.started", { buildId: 4 }),
    ]);
    expect([...c.tags].sort()).toEqual(["base", "child"]);
    expect(c.everything).toBe(false);
    expect(c.cleanup).toBe(false);
    expect(classifyEvents([ev("target.created", { name: "t" })]).everything).toBe(true);
    expect(classifyEvents([ev("build.failed", { buildId: 4 })]).cleanup).toBe(true);
    expect(classifyEvents([ev("tag.deleted", { tag: "old" })])).toMatchObject({ cleanup: true });
    // An event whose tag cannot be read: every tracked tag is looked at.
    expect(classifyEvents([{ type: "tag.edited", data: "{" }]).everything).toBe(true);
  });
});

/** Seeds a complete build of one amd64 .deb (`debName` defaults to the source). */
async function seed(
  deps: HubDeps,
  work: string,
  source: string,
  version: string,
  opts: { debName?: string; payload?: string } = {},
): Promise<number> {
  const dir = mkdtempSync(path.join(work, `${source}-`));
  const deb = buildDeb(dir, {
    name: opts.debName ?? source,
    version,
    ...(opts.payload ? { payload: opts.payload } : {}),
  });
  return seedBuild(deps, { source, version, files: [{ path: deb, kind: "deb", arch: "amd64" }] });
}

async function finished(client: KilnClient, id: number, timeoutMs = 60_000): Promise<TaskDetailJson> {
  return waitFor(
    `task ${id} to end`,
    async () => {
      const t = await client.getTask(id);
      return ["closed", "failed", "canceled"].includes(t.state) ? t : undefined;
    },
    timeoutMs,
  );
}

async function repoWith(deps: HubDeps, tag: string, builds: number[]): Promise<TagRepoJson> {
  return waitFor(
    `a ready repo of ${tag} holding ${builds.join(",")}`,
    async () => {
      const repo = await currentTagRepo(deps.db.kysely, tag);
      return repo && repoHasBuilds(repo, builds) ? repo : undefined;
    },
    60_000,
  );
}

async function tagRepoEvents(deps: HubDeps): Promise<{ type: string; repoId: number }[]> {
  const rows = await deps.db.kysely
    .selectFrom("events")
    .select(["type", "data"])
    .where("type", "like", "tagrepo.%")
    .orderBy("id")
    .execute();
  return rows.map((r) => ({ type: r.type, repoId: (JSON.parse(r.data) as { repoId: number }).repoId }));
}

const repoDir = (t: { dataDir: string }, repo: { tag: string; id: number }) =>
  path.join(t.dataDir, "repos", repo.tag, String(repo.id));

for (const dialect of dialects) {
  describe(`tag repositories (${dialect})`, () => {
    let t: TestHub;
    let deps: HubDeps;
    let work: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      deps = t.hub.deps;
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-tagrepo-"));
      const c = t.admin;
      await c.createTag({ name: "base", arches: ["amd64"] });
      await c.createTag({ name: "dev-build" });
      await c.createTag({ name: "dev" });
      await c.addTagParent("dev-build", { parent: "base", priority: 10 });
      await c.changePackages("base", {
        action: "add",
        packages: ["alpha", "beta", "delta", "zeta", "zeta-two"],
        owner: "admin",
      });
      await c.createTarget({ name: "dev-target", buildTag: "dev-build", destTag: "dev" });
    });
    afterAll(async () => {
      await t?.cleanup();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it("keeps the build tag's repo current through inheritance, signed, for a real apt-get", async () => {
      const db = deps.db.kysely;
      // The new target made its build tag tracked: an empty repo is made (or is being made).
      const first = await ensureTagRepo(deps, "dev-build", { timeoutMs: 60_000 });
      expect(first).toMatchObject({ tag: "dev-build", state: "ready", builds: [], packageCount: 0 });
      expect(first.path).toBe(`/repos/dev-build/${first.id}/`);

      // A build tagged into the parent: the tracker makes a new repo of the build tag.
      const alpha = await seed(deps, work, "alpha", "1.0");
      const tagged = await t.admin.tagBuild("base", "alpha/1.0");
      const second = await repoWith(deps, "dev-build", [alpha]);
      expect(second.id).toBeGreaterThan(first.id);
      expect(second.builds).toEqual([{ buildId: alpha, nvr: "alpha/1.0" }]);
      expect(second.eventId).toBeGreaterThanOrEqual(tagged.event);
      expect(second.packageCount).toBe(1);
      expect(second.taskId).not.toBeNull();

      // The repo it replaced was expired and, no build using it, deleted with its files.
      await waitFor("the first repo deleted", async () => {
        const all = await listTagRepos(db, "dev-build");
        return all.find((r) => r.id === first.id)?.state === "deleted" && !existsSync(repoDir(t, first));
      });
      expect(existsSync(repoDir(t, second))).toBe(true);
      const events = await tagRepoEvents(deps);
      expect(events.filter((e) => e.repoId === first.id).map((e) => e.type)).toEqual([
        "tagrepo.ready",
        "tagrepo.expired",
        "tagrepo.deleted",
      ]);
      expect(events).toContainEqual({ type: "tagrepo.ready", repoId: second.id });

      // The API answers the same.
      expect(await t.admin.getTagRepo("dev-build")).toEqual(second);
      const history = await t.admin.listTagRepos("dev-build");
      expect(history[0]).toEqual(second);
      expect(history.find((r) => r.id === first.id)?.state).toBe("deleted");

      // A real apt-get reads it with the hub's archive key, and fetches the build's .deb.
      if (!haveApt) return;
      const keyring = path.join(work, "keyring.gpg");
      const armored = await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text();
      execFileSync("gpg", ["--dearmor", "-o", keyring], { input: armored });
      const line = tagRepoSourcesLine(t.url, second, keyring);
      expect(line).toBe(`deb [signed-by=${keyring}] ${t.url}/repos/dev-build/${second.id} kiln main`);
      const apt = new AptClient(line);
      try {
        const up = await apt.update();
        expect(up.stderr).not.toMatch(/^(E|W):/m);
        expect(up.code).toBe(0);
        const dl = await apt.download("alpha");
        expect(dl.stderr).toBe("");
        expect(dl.code).toBe(0);
        const got = readFileSync(path.join(dl.dir, "alpha_1.0_amd64.deb"));
        const artifact = await db
          .selectFrom("artifacts")
          .select("sha256")
          .where("build_id", "=", alpha)
          .executeTakeFirstOrThrow();
        expect(sha256(got)).toBe(artifact.sha256);
      } finally {
        apt.cleanup();
      }
    });

    it("makes no new repo when the latest builds did not change, and records nothing", async () => {
      const db = deps.db.kysely;
      const before = await currentTagRepo(db, "dev-build");
      expect(before).toBeDefined();
      const rows = (await listTagRepos(db, "dev-build")).length;
      const events = (await tagRepoEvents(deps)).length;

      const task = await queueNewRepo(deps, "dev-build");
      const done = await finished(t.admin, task.id);
      expect(done.state).toBe("closed");
      expect(done.result).toMatchObject({ id: before?.id, unchanged: true });

      // A change that moves no build (an extra setting) queues a newRepo that finds nothing new.
      const last = (await t.admin.listTasks({ method: "newRepo", limit: 1 })).tasks[0]?.id ?? 0;
      await t.admin.editTag("base", { extra: { note: "x" } });
      const next = await waitFor("the tracker's newRepo", async () => {
        const [newest] = (await t.admin.listTasks({ method: "newRepo", limit: 1 })).tasks;
        return newest && newest.id > last ? newest : undefined;
      });
      expect((await finished(t.admin, next.id)).result).toMatchObject({ id: before?.id, unchanged: true });
      expect((await listTagRepos(db, "dev-build")).length).toBe(rows);
      expect((await tagRepoEvents(deps)).length).toBe(events);
    });

    it("queues one newRepo per tag however often, and however concurrently, it is asked", async () => {
      const db = deps.db.kysely;
      // A task that can never run holds the tag's lock: newRepos queue up behind it, unclaimed.
      const blocker = await createTask(deps, {
        method: "sleep",
        args: { seconds: 0 },
        owner: "admin",
        channel: "nowhere",
        locks: [newRepoLock("dev-build")],
      });
      const a = await queueNewRepo(deps, "dev-build");
      const b = await queueNewRepo(deps, "dev-build");
      expect(b.id).toBe(a.id);
      const many = await Promise.all(Array.from({ length: 6 }, () => queueNewRepo(deps, "dev-build")));
      expect(new Set(many.map((m) => m.id))).toEqual(new Set([a.id]));
      const viaApi = await t.admin.regenTagRepo("dev-build");
      expect(viaApi.task).toMatchObject({ id: a.id, method: "newRepo", state: "free" });
      expect((await newRepoTasks(db, "dev-build", ["free"])).map((x) => x.id)).toEqual([a.id]);
      // Another tag gets its own.
      const other = await queueNewRepo(deps, "base");
      expect(other.id).not.toBe(a.id);

      await t.admin.cancelTask(blocker.id);
      expect((await finished(t.admin, a.id)).state).toBe("closed");
      expect((await finished(t.admin, other.id)).state).toBe("closed");
    });

    it("keeps an expired repo a building build installs from until that build ends", async () => {
      const db = deps.db.kysely;
      const inUse = await currentTagRepo(db, "dev-build");
      if (!inUse) throw new Error("no repo");
      // A running build installing from it (what buildArch records).
      const running = await seed(deps, work, "consumer", "1.0");
      await db.updateTable("builds").set({ state: "building" }).where("id", "=", running).execute();
      expect(await pinTagRepo(db, running, inUse.id)).toBe(true);

      const beta = await seed(deps, work, "beta", "1.0");
      await t.admin.tagBuild("base", "beta/1.0");
      const next = await repoWith(deps, "dev-build", [beta]);
      expect(next.id).toBeGreaterThan(inUse.id);
      const old = (await listTagRepos(db, "dev-build")).find((r) => r.id === inUse.id);
      expect(old?.state).toBe("expired");
      expect(old?.expiredAt).not.toBeNull();
      // Still served, for the build in the middle of installing from it.
      const inRelease = await fetch(`${t.url}${inUse.path}dists/kiln/InRelease`);
      expect(inRelease.status).toBe(200);
      await inRelease.body?.cancel();

      // The build ends (as the build task's finalizer records it): the repo goes.
      await withWriteTx(deps.db, async (trx) => {
        await trx.updateTable("builds").set({ state: "failed" }).where("id", "=", running).execute();
        await recordEvent(
          trx,
          "build.failed",
          { buildId: running, nvr: "consumer/1.0" },
          "admin",
          Date.now(),
        );
      });
      deps.wake.notify();
      await waitFor("the expired repo deleted", async () => {
        const row = (await listTagRepos(db, "dev-build")).find((r) => r.id === inUse.id);
        // The row changes first, then the files go.
        return row?.state === "deleted" && !existsSync(repoDir(t, inUse));
      });
      expect((await fetch(`${t.url}${inUse.path}dists/kiln/InRelease`)).status).toBe(404);
      // A deleted repo cannot be pinned any more: the build must choose the current one.
      expect(await pinTagRepo(db, running, inUse.id)).toBe(false);
      // What is left: the ready repo alone.
      const live = (await listTagRepos(db, "dev-build")).filter(
        (r) => r.state === "ready" || r.state === "expired",
      );
      expect(live.map((r) => r.id)).toEqual([next.id]);
    });

    it("leaves the ready repo alone when a generation fails, and says why", async () => {
      const db = deps.db.kysely;
      const ready = await currentTagRepo(db, "dev-build");
      if (!ready) throw new Error("no repo");
      // Two builds whose .debs claim one pool file with different contents.
      await seed(deps, work, "zeta", "1.0", { payload: "one" });
      await seed(deps, work, "zeta-two", "1.0", { debName: "zeta", payload: "two" });
      await t.admin.createTag({ name: "broken" });
      await t.admin.addTagParent("broken", { parent: "base", priority: 1 });
      await t.admin.tagBuild("base", "zeta/1.0");
      await t.admin.tagBuild("base", "zeta-two/1.0");

      const failed = await waitFor("a failed generation", async () =>
        (await listTagRepos(db, "dev-build")).find((r) => r.id > ready.id && r.state === "failed"),
      );
      expect(failed.error).toMatch(/zeta_1\.0_amd64\.deb/);
      expect(existsSync(repoDir(t, failed))).toBe(false);
      expect((await currentTagRepo(db, "dev-build"))?.id).toBe(ready.id);
      // The parent's own repo (queued by an earlier test) fails on the same conflict, in either
      // order: look for this repo's event.
      const failures = await db
        .selectFrom("events")
        .select("data")
        .where("type", "=", "tagrepo.failed")
        .execute();
      const mine = failures
        .map((e) => JSON.parse(e.data) as { tag: string; repoId: number })
        .filter((e) => e.repoId === failed.id);
      expect(mine).toEqual([expect.objectContaining({ tag: "dev-build", code: "POOL_FILE_CONFLICT" })]);

      // A tag with no repo yet: ensureTagRepo says the generation failed, with a stable code.
      await expect(ensureTagRepo(deps, "broken", { timeoutMs: 60_000 })).rejects.toMatchObject({
        code: "TAG_REPO_FAILED",
        message: expect.stringMatching(/POOL_FILE_CONFLICT/) as unknown,
      });
      await expect(t.admin.getTagRepo("broken")).rejects.toMatchObject({ code: "TAG_REPO_NOT_FOUND" });

      // The conflict removed: the next repo is made.
      await t.admin.untagBuild("base", "zeta-two/1.0");
      const zeta = await db
        .selectFrom("builds")
        .select("id")
        .where("source", "=", "zeta")
        .executeTakeFirstOrThrow();
      const fixed = await repoWith(deps, "dev-build", [zeta.id]);
      expect(fixed.builds.map((b) => b.nvr)).not.toContain("zeta-two/1.0");
    });

    it("waitRepo closes once a ready repo holds the builds, and times out with TAG_REPO_TIMEOUT", async () => {
      const delta = await seed(deps, work, "delta", "1.0");
      const task = await t.admin.createTask({
        method: "waitRepo",
        args: { tag: "dev-build", builds: [delta] },
      });
      await waitFor("waitRepo running", async () => (await t.admin.getTask(task.id)).state === "open");
      // Not tagged yet: it waits (and queues nothing: a new repo would not hold delta either).
      await new Promise((r) => setTimeout(r, 500));
      expect((await t.admin.getTask(task.id)).state).toBe("open");

      await t.admin.tagBuild("base", "delta/1.0");
      const done = await finished(t.admin, task.id);
      expect(done.state).toBe("closed");
      const repo = done.result as TagRepoJson;
      expect(repoHasBuilds(repo, [delta])).toBe(true);
      expect(repo).toMatchObject({ tag: "dev-build", state: "ready" });

      // Held already: closes at once.
      const again = await t.admin.createTask({
        method: "waitRepo",
        args: { tag: "dev-build", builds: [delta] },
      });
      expect((await finished(t.admin, again.id)).result).toMatchObject({ id: repo.id });

      // Never tagged: fails past its timeout, with a stable code and the reason.
      const stray = await seed(deps, work, "stray", "1.0");
      const slow = await t.admin.createTask({
        method: "waitRepo",
        args: { tag: "dev-build", builds: [stray], timeoutS: 1 },
      });
      const failed = await finished(t.admin, slow.id);
      expect(failed.state).toBe("failed");
      expect(failed.error?.code).toBe("TAG_REPO_TIMEOUT");
      expect(failed.error?.message).toMatch(/not among the tag's latest builds: stray\/1\.0/);
    });

    it("refuses bad input with stable codes", async () => {
      const c = t.admin;
      await expect(c.getTagRepo("nope")).rejects.toMatchObject({ code: "TAG_NOT_FOUND" });
      await expect(c.listTagRepos("nope")).rejects.toMatchObject({ code: "TAG_NOT_FOUND" });
      await expect(c.regenTagRepo("nope")).rejects.toMatchObject({ code: "TAG_NOT_FOUND" });
      await expect(c.getTagRepo("dev")).rejects.toMatchObject({
        code: "TAG_REPO_NOT_FOUND",
        message: expect.stringContaining("kiln tag regen-repo dev") as unknown,
      });
      await expect(t.client().getTagRepo("dev-build")).rejects.toMatchObject({ code: "AUTH_REQUIRED" });
      for (const args of [
        { tag: "dev-build", builds: ["alpha/1.0"] },
        { tag: "../etc", builds: [] },
        { tag: "dev-build", builds: [1], timeoutS: -1 },
      ]) {
        await expect(c.createTask({ method: "waitRepo", args })).rejects.toMatchObject({
          code: "VALIDATION_FAILED",
        });
      }
      await expect(c.createTask({ method: "newRepo", args: { tag: "dev-build" } })).rejects.toMatchObject({
        code: "FORBIDDEN",
      });
      const unknownTag = await c.createTask({ method: "waitRepo", args: { tag: "nope", builds: [] } });
      expect((await finished(c, unknownTag.id)).error?.code).toBe("TAG_NOT_FOUND");
      const unknownBuild = await c.createTask({
        method: "waitRepo",
        args: { tag: "dev-build", builds: [987654] },
      });
      expect((await finished(c, unknownBuild.id)).error?.code).toBe("BUILD_NOT_FOUND");

      // /repos/ serves files only, inside <data>/repos, to anyone.
      expect((await fetch(`${t.url}/repos/dev-build/..%2f..%2fkiln.db`)).status).toBe(400);
      expect((await fetch(`${t.url}/repos/dev-build/`)).status).toBe(404);
      expect((await fetch(`${t.url}/repos/dev-build/999999/dists/kiln/InRelease`)).status).toBe(404);
      const repo = await c.getTagRepo("dev-build");
      const res = await fetch(`${t.url}${repo.path}dists/kiln/Release`);
      expect(res.status).toBe(200);
      expect(await res.text()).toMatch(/^Codename: kiln$/m);
    });
  });
}

/** A hub on a data directory and database that outlive it, for restarts. */
async function hubOn(config: HubConfig): Promise<{ hub: Hub; admin: KilnClient }> {
  const hub = await startHub(config, { log: silentLog, lazyArchiveKey: true });
  const token = readFileSync(hub.adminTokenFile, "utf8").trim();
  return { hub, admin: new KilnClient({ hub: hub.url, token }) };
}

async function tagWhileDown(config: HubConfig, tag: string, nvr: string): Promise<void> {
  const db = openDatabase(config.db);
  try {
    await tagBuild({ db, clock: systemClock }, tag, nvr, { name: "admin", isAdmin: true });
  } finally {
    await db.close();
  }
}

for (const dialect of dialects) {
  describe(`tag repositories across a restart (${dialect})`, () => {
    let dataDir: string;
    let work: string;
    let config: HubConfig;
    let drop: (() => Promise<void>) | undefined;
    let running: Hub | undefined;

    beforeAll(async () => {
      dataDir = mkdtempSync(path.join(os.tmpdir(), "kiln-tagrepo-restart-"));
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-tagrepo-debs-"));
      const pg = dialect === "postgres" ? await createPgDatabase() : undefined;
      drop = pg ? () => pg.drop() : undefined;
      config = {
        data: dataDir,
        listen: { host: "127.0.0.1", port: 0 },
        db: pg ? pg.url : `sqlite://${path.join(dataDir, "kiln.db")}`,
        worker: false,
        workerName: undefined,
        logLevel: "silent",
        engine: { ...DEFAULT_ENGINE },
        policies: {},
        uploadLimitBytes: 64 * 1024 * 1024,
      };
    });
    afterAll(async () => {
      await running?.close();
      await drop?.();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    });

    it("regenerates on start for a change made while down, and resumes a waitRepo from the top", async () => {
      let { hub, admin } = await hubOn(config);
      running = hub;
      await admin.createTag({ name: "r-base", arches: ["amd64"] });
      await admin.createTag({ name: "r-build" });
      await admin.addTagParent("r-build", { parent: "r-base", priority: 1 });
      await admin.changePackages("r-base", { action: "add", packages: ["one", "two"], owner: "admin" });
      await admin.createTarget({ name: "r", buildTag: "r-build", destTag: "r-base" });
      const first = await ensureTagRepo(hub.deps, "r-build", { timeoutMs: 60_000 });
      const one = await seed(hub.deps, work, "one", "1.0");
      const two = await seed(hub.deps, work, "two", "1.0");

      // Tagged while the hub is down: nothing saw the event; the hub's start does.
      await hub.close();
      await tagWhileDown(config, "r-base", "one/1.0");
      ({ hub, admin } = await hubOn(config));
      running = hub;
      const second = await repoWith(hub.deps, "r-build", [one]);
      expect(second.id).toBeGreaterThan(first.id);

      // A waitRepo cut off by a stop runs again from the top on the next start.
      const wait = await admin.createTask({ method: "waitRepo", args: { tag: "r-build", builds: [two] } });
      await waitFor("waitRepo running", async () => (await admin.getTask(wait.id)).state === "open");
      await hub.close();
      await tagWhileDown(config, "r-base", "two/1.0");
      ({ hub, admin } = await hubOn(config));
      running = hub;
      const done = await finished(admin, wait.id);
      expect(done.state).toBe("closed");
      expect(repoHasBuilds(done.result as TagRepoJson, [one, two])).toBe(true);
    }, 120_000);
  });
}
