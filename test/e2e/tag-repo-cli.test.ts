/**
 * `kiln tag repo`, `kiln tag regen-repo` and `kiln wait-repo` as users run them: the real CLI
 * (bin/kiln.js, so `npm run build` first) against a hub in this process, on each dialect.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TagRepoJson, TaskJson } from "../../src/client/types.js";
import { ensureTagRepo } from "../../src/builds/tag-repos.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { runKiln, waitFor, type KilnRun } from "../helpers/procs.js";
import { seedBuild } from "../helpers/seed-build.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

/** The CLI as users run it, asynchronously: the hub lives in this process. */
const kiln = (t: TestHub, args: string[]): Promise<KilnRun> => runKiln(t.url, t.adminToken, args, 60_000);

async function ok(t: TestHub, args: string[]): Promise<string> {
  const r = await kiln(t, args);
  expect(r.code, `kiln ${args.join(" ")}\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}

for (const dialect of dialects) {
  describe(`kiln tag repo, regen-repo and wait-repo (${dialect})`, () => {
    let t: TestHub;
    let work: string;
    const seed = (source: string) =>
      seedBuild(t.hub.deps, {
        source,
        version: "1.0",
        files: [{ path: buildDeb(work, { name: source, version: "1.0" }), kind: "deb", arch: "amd64" }],
      });

    beforeAll(async () => {
      t = await startTestHub(dialect);
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-tagrepo-cli-"));
      const c = t.admin;
      await c.createTag({ name: "lib", arches: ["amd64"] });
      await c.createTag({ name: "app-build" });
      await c.createTag({ name: "app" });
      await c.addTagParent("app-build", { parent: "lib", priority: 1 });
      await c.changePackages("lib", { action: "add", packages: ["libx", "liby", "stray"], owner: "admin" });
      await c.createTarget({ name: "app-target", buildTag: "app-build", destTag: "app" });
      await ensureTagRepo(t.hub.deps, "app-build", { timeoutMs: 60_000 });
    });
    afterAll(async () => {
      await t?.cleanup();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it("shows the current repo as JSON and for people, with the apt line a worker uses", async () => {
      const libx = await seed("libx");
      await t.admin.tagBuild("lib", "libx/1.0");
      // wait-repo returns once a ready repo holds the build.
      const waited = JSON.parse(
        await ok(t, ["wait-repo", "app-build", "--build", "libx/1.0", "--json"]),
      ) as TagRepoJson;
      expect(waited.builds).toContainEqual({ buildId: libx, nvr: "libx/1.0" });

      const shown = JSON.parse(await ok(t, ["tag", "repo", "app-build", "--json"])) as TagRepoJson;
      expect(shown).toEqual(await t.admin.getTagRepo("app-build"));
      expect(shown).toMatchObject({
        id: waited.id,
        tag: "app-build",
        state: "ready",
        path: `/repos/app-build/${waited.id}/`,
      });

      const text = await ok(t, ["tag", "repo", "app-build"]);
      expect(text).toMatch(new RegExp(`^repo +${shown.id} \\(ready\\)$`, "m"));
      expect(text).toMatch(new RegExp(`^event +${shown.eventId}$`, "m"));
      expect(text).toMatch(/^ {2}libx\/1\.0$/m);
      expect(text).toContain(
        `apt source   deb [signed-by=/usr/share/keyrings/kiln-archive-keyring.gpg] ${t.url}/repos/app-build/${shown.id} kiln main`,
      );
      // What the line names is served.
      expect((await fetch(`${t.url}${shown.path}dists/kiln/InRelease`)).status).toBe(200);
    });

    it("waits for a build tagged while it waits, and regenerates on request", async () => {
      const liby = await seed("liby");
      // Started before the build is tagged: it warns, then waits until the repo holds it.
      const waiting = kiln(t, ["wait-repo", "app-build", "--build", "liby/1.0", "--json"]);
      await waitFor("the waitRepo task", async () => {
        const { tasks } = await t.admin.listTasks({ method: "waitRepo", state: "open" });
        return tasks.length > 0;
      });
      await t.admin.tagBuild("lib", "liby/1.0");
      const r = await waiting;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/warning: liby\/1\.0 is not among app-build's latest builds/);
      expect((JSON.parse(r.stdout) as TagRepoJson).builds).toContainEqual({ buildId: liby, nvr: "liby/1.0" });

      // Without --build: the tag's latest builds, already held, so at once.
      const all = await kiln(t, ["wait-repo", "app-build"]);
      expect(all.code).toBe(0);
      expect(all.stdout).toMatch(/^Repo [0-9]+ of app-build \(event [0-9]+\) holds 2 latest builds: /m);

      // Nothing changed since: regen-repo makes no new repo and says so.
      const regen = await ok(t, ["tag", "regen-repo", "app-build"]);
      expect(regen).toMatch(/^Repo [0-9]+ of app-build is current/m);
      expect(regen).toMatch(/^apt source: +deb \[signed-by=/m);
      const queued = JSON.parse(await ok(t, ["tag", "regen-repo", "app-build", "--nowait", "--json"])) as {
        task: TaskJson;
      };
      expect(queued.task).toMatchObject({ method: "newRepo", args: { tag: "app-build" } });
    });

    it("fails with stable codes: an unknown build or tag, a malformed build, a timeout", async () => {
      const unknown = await kiln(t, ["wait-repo", "app-build", "--build", "nope/1.0"]);
      expect(unknown.code).toBe(3);
      expect(unknown.stderr).toMatch(/\[BUILD_NOT_FOUND\]/);

      const malformed = await kiln(t, ["wait-repo", "app-build", "--build", "nope"]);
      expect(malformed.code).toBe(2);
      expect(malformed.stderr).toMatch(/expected SOURCE\/VERSION/);

      const noTag = await kiln(t, ["tag", "repo", "nope", "--json"]);
      expect(noTag.code).toBe(3);
      expect(JSON.parse(noTag.stdout)).toMatchObject({ error: { code: "TAG_NOT_FOUND" } });
      expect((await kiln(t, ["wait-repo", "nope"])).stderr).toMatch(/\[TAG_NOT_FOUND\]/);

      const noRepo = await kiln(t, ["tag", "repo", "app"]);
      expect(noRepo.code).toBe(3);
      expect(noRepo.stderr).toMatch(/kiln tag regen-repo app.*\[TAG_REPO_NOT_FOUND\]/);

      // A build never tagged: Koji's wait-repo warns and waits; past --timeout it fails.
      await seed("stray");
      const timedOut = await kiln(t, [
        "wait-repo",
        "app-build",
        "--build",
        "stray/1.0",
        "--timeout",
        "1",
        "--json",
      ]);
      expect(timedOut.code).toBe(1);
      expect(timedOut.stderr).toMatch(/warning: stray\/1\.0 is not among app-build's latest builds/);
      expect(JSON.parse(timedOut.stdout)).toMatchObject({ error: { code: "TAG_REPO_TIMEOUT" } });
    });
  });
}
