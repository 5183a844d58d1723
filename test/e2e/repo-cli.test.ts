/**
 * `kiln repo|snapshot|publish` as users run them: the real CLI (bin/kiln.js, so `npm run build`
 * first) against a hub in this process, on each dialect.
 */
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PublicationJson, RepoDetailJson, SnapshotDiffJson } from "../../src/client/types.js";
import { AptClient } from "../helpers/apt.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { runKiln, type KilnRun } from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/packages");
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** The real CLI, run asynchronously: the hub lives in this process and must go on answering. */
function kiln(t: TestHub, args: string[]): Promise<KilnRun> {
  return runKiln(t.url, t.adminToken, args, 60_000);
}

async function ok(t: TestHub, args: string[]): Promise<string> {
  const r = await kiln(t, args);
  expect(r.code, `kiln ${args.join(" ")}\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}

async function release(t: TestHub, aptPath: string): Promise<{ status: number; sha256: string }> {
  const res = await fetch(`${t.url}/apt/${aptPath}/Release`);
  return { status: res.status, sha256: sha256(Buffer.from(await res.arrayBuffer())) };
}

for (const dialect of dialects) {
  describe(`kiln repo, snapshot and publish (${dialect})`, () => {
    let t: TestHub;
    let work: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-repo-cli-e2e-"));
    });
    afterAll(async () => {
      await t?.cleanup();
      rmSync(work, { recursive: true, force: true });
    });

    it("adds a directory of .debs, publishes it signed, updates and rolls back, each served on return", async () => {
      await ok(t, ["repo", "create", "main", "--distribution", "stable", "--comment", "e2e"]);
      const debs = path.join(work, "debs");
      mkdirSync(path.join(debs, "more"), { recursive: true });
      buildDeb(debs, { name: "hello-cli", version: "1.0-1" });
      buildDeb(path.join(debs, "more"), { name: "hello-doc", version: "1.0-1", arch: "all" });
      writeFileSync(path.join(debs, "NOTES"), "not a package");

      const added = await kiln(t, ["repo", "add", "main", debs]);
      expect(added.code).toBe(0);
      expect(added.stdout).toMatch(/^added +hello-cli_1\.0-1_amd64\.deb /m);
      expect(added.stdout).toMatch(/^added +hello-doc_1\.0-1_all\.deb /m);
      expect(added.stdout).toMatch(/main: 2 added, 0 already there, 0 failed/);
      const again = await kiln(t, ["repo", "add", "main", path.join(debs, "hello-cli_1.0-1_amd64.deb")]);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/^already there +hello-cli_1\.0-1_amd64\.deb /m);

      const shown = JSON.parse(
        await ok(t, ["repo", "show", "main", "--with-packages", "--json"]),
      ) as RepoDetailJson;
      expect(shown).toMatchObject({
        name: "main",
        distribution: "stable",
        component: "main",
        packageCount: 2,
      });
      expect(shown.packages?.map((p) => `${p.name} ${p.version} ${p.architecture}`).sort()).toEqual([
        "hello-cli 1.0-1 amd64",
        "hello-doc 1.0-1 all",
      ]);
      const listed = JSON.parse(await ok(t, ["repo", "list", "--json"])) as { name: string }[];
      expect(listed.map((r) => r.name)).toEqual(["main"]);

      // The distribution and component come from the repo; the command returns only once the
      // hub serves the new Release, so fetching it right after must give that Release.
      const pub = await ok(t, ["publish", "repo", "main", "--json"]);
      const first = JSON.parse(pub) as {
        result: { generation: number; releaseSha256: string };
        publication: PublicationJson;
      };
      expect(first.result.generation).toBe(1);
      expect(await release(t, "dists/stable")).toEqual({ status: 200, sha256: first.result.releaseSha256 });

      // A second distribution, printed for humans: the apt line and key command work as given.
      const text = await ok(t, ["publish", "repo", "main", "ppa", "--distribution", "testing"]);
      expect(text).toMatch(/^Published ppa\/testing \(generation 1, 2 packages\)$/m);
      const line = /^apt source: +(deb .*)$/m.exec(text)?.[1] ?? "";
      expect(line).toBe(
        `deb [signed-by=/usr/share/keyrings/kiln-archive-keyring.gpg] ${t.url}/apt/ppa testing main`,
      );
      expect(text).toContain(`curl -fsSL ${t.url}/apt/kiln-archive-keyring.asc | sudo gpg --dearmor -o `);
      const keyring = path.join(work, "keyring.gpg");
      const armored = await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text();
      execFileSync("gpg", ["--dearmor", "-o", keyring], { input: armored });
      const apt = new AptClient(line.replace("/usr/share/keyrings/kiln-archive-keyring.gpg", keyring));
      try {
        const up = await apt.update();
        expect(up.stderr).not.toMatch(/^(E|W):/m);
        expect(up.code).toBe(0);
        expect((await apt.download("hello-cli")).code).toBe(0);
      } finally {
        apt.cleanup();
      }

      // Version 2, then update: served on return; rollback: the first Release again, on return.
      buildDeb(path.join(work, "v2"), { name: "hello-cli", version: "2.0-1" });
      await ok(t, ["repo", "add", "main", path.join(work, "v2")]);
      const updated = JSON.parse(await ok(t, ["publish", "update", "stable", "--json"])) as {
        result: { generation: number; releaseSha256: string };
      };
      expect(updated.result.generation).toBe(2);
      expect(await release(t, "dists/stable")).toEqual({ status: 200, sha256: updated.result.releaseSha256 });
      const back = await ok(t, ["publish", "rollback", "stable"]);
      expect(back).toMatch(/^Rolled stable back to generation 1, 2 packages$/m);
      expect(await release(t, "dists/stable")).toEqual({ status: 200, sha256: first.result.releaseSha256 });

      const history = JSON.parse(await ok(t, ["publish", "show", "stable", "--json"])) as PublicationJson;
      expect(history.liveGeneration).toBe(1);
      expect(history.history?.map((g) => [g.generation, g.state])).toEqual([
        [2, "retired"],
        [1, "live"],
      ]);
      expect(await ok(t, ["publish", "show", "stable"])).toMatch(/^ +\*1 +live +2 /m);
      const pubs = JSON.parse(await ok(t, ["publish", "list", "--json"])) as PublicationJson[];
      expect(pubs.map((p) => `${p.prefix} ${p.distribution}`).sort()).toEqual([". stable", "ppa testing"]);
    });

    it("snapshots, diffs, merges, filters, publishes a snapshot and switches it", async () => {
      await ok(t, ["repo", "create", "snaps"]);
      buildDeb(path.join(work, "s1"), { name: "snap-a", version: "1.0" });
      buildDeb(path.join(work, "s1"), { name: "snap-b", version: "1.0", arch: "all" });
      await ok(t, ["repo", "add", "snaps", path.join(work, "s1")]);
      expect(await ok(t, ["snapshot", "create", "snap1", "--from-repo", "snaps"])).toMatch(
        /Created snapshot snap1 with 2 packages/,
      );
      buildDeb(path.join(work, "s2"), { name: "snap-a", version: "2.0" });
      await ok(t, ["repo", "add", "snaps", path.join(work, "s2")]);
      await ok(t, ["repo", "remove", "snaps", "snap-b"]);
      await ok(t, ["snapshot", "create", "snap2", "--from-repo", "snaps", "--description", "second"]);

      const diff = JSON.parse(
        await ok(t, ["snapshot", "diff", "snap1", "snap2", "--json"]),
      ) as SnapshotDiffJson[];
      expect(diff.map((d) => [d.name, d.left !== null, d.right !== null])).toEqual([
        ["snap-a", false, true],
        ["snap-b", true, false],
      ]);
      expect(await ok(t, ["snapshot", "diff", "snap1", "snap2"])).toMatch(/^\+ +snap-a +amd64 +- +2\.0$/m);

      expect(await ok(t, ["snapshot", "merge", "merged", "snap1", "snap2", "--latest"])).toMatch(
        /with 2 packages/,
      );
      const merged = JSON.parse(await ok(t, ["snapshot", "show", "merged", "--with-packages", "--json"])) as {
        packages: { name: string; version: string }[];
      };
      expect(merged.packages.map((p) => `${p.name} ${p.version}`).sort()).toEqual([
        "snap-a 2.0",
        "snap-b 1.0",
      ]);
      expect(await ok(t, ["snapshot", "filter", "merged", "only-b", "snap-b"])).toMatch(/with 1 package;/);
      const snaps = JSON.parse(await ok(t, ["snapshot", "list", "--json"])) as { name: string }[];
      expect(snaps.map((s) => s.name).sort()).toEqual(["merged", "only-b", "snap1", "snap2"]);

      const pub = JSON.parse(
        await ok(t, [
          "publish",
          "snapshot",
          "snap1",
          "snaps",
          "--distribution",
          "s",
          "--skip-signing",
          "--json",
        ]),
      ) as { result: { releaseSha256: string }; publication: PublicationJson };
      expect(pub.publication.path).toBe("snaps/dists/s");
      expect(await release(t, "snaps/dists/s")).toEqual({ status: 200, sha256: pub.result.releaseSha256 });
      const packagesUrl = `${t.url}/apt/snaps/dists/s/main/binary-amd64/Packages`;
      expect(await (await fetch(packagesUrl)).text()).not.toMatch(/^Version: 2\.0$/m);
      const switched = await kiln(t, ["publish", "switch", "s", "snaps", "snap2"]);
      expect(switched.code).toBe(0);
      expect(switched.stdout).toMatch(/^Switched snaps\/s \(generation 2, 2 packages\)$/m);
      expect(switched.stdout).toContain(`deb [trusted=yes] ${t.url}/apt/snaps s main`);
      const packages = await (await fetch(packagesUrl)).text();
      expect(packages).toMatch(/^Version: 2\.0$/m);

      // A published snapshot is not dropped without --force; dropping the publication first works.
      const refused = await kiln(t, ["snapshot", "drop", "snap2"]);
      expect(refused.code).toBe(4);
      expect(refused.stderr).toMatch(/\[SNAPSHOT_PUBLISHED\]/);
      const dropped = await kiln(t, ["publish", "drop", "s", "snaps"]);
      expect(dropped.code).toBe(0);
      expect((await release(t, "snaps/dists/s")).status).toBe(404);
      await ok(t, ["snapshot", "drop", "snap2"]);
      await ok(t, ["repo", "drop", "snaps"]);
    });

    it("copies, moves and queues with --nowait", async () => {
      await ok(t, ["repo", "create", "a"]);
      await ok(t, ["repo", "create", "b"]);
      buildDeb(path.join(work, "cm"), { name: "cm-one", version: "1" });
      buildDeb(path.join(work, "cm"), { name: "cm-two", version: "1" });
      const queued = await kiln(t, ["repo", "add", "a", path.join(work, "cm"), "--nowait"]);
      expect(queued.code).toBe(0);
      const task = Number(/^task (\d+)$/m.exec(queued.stdout)?.[1]);
      expect(task).toBeGreaterThan(0);
      await expect.poll(async () => (await t.admin.getTask(task)).state, { timeout: 20_000 }).toBe("closed");
      expect(await ok(t, ["repo", "copy", "a", "b", "cm-one"])).toMatch(/^Copied 1 package from a to b$/m);
      expect(await ok(t, ["repo", "move", "a", "b", "cm-two"])).toMatch(/^Moved 1 package from a to b$/m);
      const a = JSON.parse(await ok(t, ["repo", "show", "a", "--json"])) as RepoDetailJson;
      const b = JSON.parse(await ok(t, ["repo", "show", "b", "--json"])) as RepoDetailJson;
      expect([a.packageCount, b.packageCount]).toEqual([1, 2]);
    });

    it("adds a .dsc with the files it lists", async () => {
      const src = path.join(work, "dsc");
      mkdirSync(src);
      cpSync(path.join(FIXTURES, "hello-all"), path.join(src, "hello-all"), { recursive: true });
      execFileSync("dpkg-source", ["-b", "hello-all"], { cwd: src, stdio: "pipe" });
      await ok(t, ["repo", "create", "sources"]);
      const added = await ok(t, ["repo", "add", "sources", path.join(src, "hello-all_1.0.dsc")]);
      expect(added).toMatch(/^added +hello-all_1\.0\.dsc /m);
      const shown = JSON.parse(
        await ok(t, ["repo", "show", "sources", "--query", "hello-all", "--json"]),
      ) as RepoDetailJson;
      expect(shown.packages?.map((p) => [p.name, p.type, p.files.map((f) => f.name).sort()])).toEqual([
        ["hello-all", "source", ["hello-all_1.0.dsc", "hello-all_1.0.tar.xz"]],
      ]);
    });

    it("says what is wrong, with the code's exit status", async () => {
      const unknown = await kiln(t, ["repo", "show", "no-such-repo"]);
      expect(unknown.code).toBe(3);
      expect(unknown.stderr).toMatch(/no local repo "no-such-repo".*\[REPO_NOT_FOUND\]/);

      const addUnknown = await kiln(t, ["repo", "add", "no-such-repo", path.join(work, "debs")]);
      expect(addUnknown.code).toBe(3);

      await ok(t, ["repo", "create", "q"]);
      const badQuery = await kiln(t, ["repo", "remove", "q", "hello (>>"]);
      expect(badQuery.code).toBe(2);
      expect(badQuery.stderr).toMatch(/\[QUERY_INVALID\]/);
      expect(badQuery.stderr).toMatch(/^hint: queries are Aptly's/m);

      const json = await kiln(t, ["publish", "show", "nowhere", "--json"]);
      expect(json.code).toBe(3);
      expect((JSON.parse(json.stdout) as { error: { code: string } }).error.code).toBe(
        "PUBLICATION_NOT_FOUND",
      );

      const noSource = await kiln(t, ["snapshot", "create", "x"]);
      expect(noSource.code).toBe(2);
      expect(noSource.stderr).toMatch(/--from-repo REPO and --from-tag TAG/);

      // An empty repo with no default distribution: refused before anything is queued.
      const noDist = await kiln(t, ["publish", "repo", "q"]);
      expect(noDist.code).toBe(2);
      expect(noDist.stderr).toMatch(/--distribution DIST/);

      // A conflicting file: reported per file, exit 4.
      const other = path.join(work, "conflict");
      buildDeb(other, { name: "hello-cli", version: "1.0-1", payload: "different" });
      const conflict = await kiln(t, ["repo", "add", "main", other]);
      expect(conflict.code).toBe(4);
      expect(conflict.stdout).toMatch(/^failed +hello-cli_1\.0-1_amd64\.deb: .*\[PACKAGE_CONFLICT\]$/m);
    });
  });
}
