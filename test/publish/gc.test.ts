import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import { formatGcReport } from "../../src/cli/gc.js";
import { publishDeps } from "../../src/hub/handlers/repo-ops.js";
import { indexReferences, type GcReport } from "../../src/publish/collect-garbage.js";
import { packagesOfBuild } from "../../src/publish/publish-ops.js";
import { createTask } from "../../src/tasks/create-task.js";
import { DEFAULT_ENGINE } from "../../src/config/config.js";
import { startHub } from "../../src/hub/server.js";
import { createPgDatabase, DIALECTS, silentLog } from "../helpers/db.js";
import { waitFor } from "../helpers/procs.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { seedBuild } from "../helpers/seed-build.js";

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

async function upload(client: KilnClient, files: string[]): Promise<string> {
  const { id } = await client.createUpload();
  for (const f of files) await client.uploadFile(id, path.basename(f), readFileSync(f));
  return id;
}

/** Every file under `dir`, relative to it, sorted. */
function walk(dir: string, rel = ""): string[] {
  if (!existsSync(path.join(dir, rel))) return [];
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, r));
    else out.push(r);
  }
  return out.sort();
}

describe("indexReferences", () => {
  it("reads Filename and SHA256 of Packages, Directory with Files and Checksums-Sha256 of Sources", () => {
    const packages = [
      "Package: a",
      "Version: 1",
      "Filename: pool/main/a/a/a_1_amd64.deb",
      "SHA256: " + "A".repeat(64),
      "Description: x",
      " Filename: pool/not/a/field.deb",
      "",
      "Package: b",
      "Filename: pool/main/b/b/b_1_all.deb",
      "",
    ].join("\n");
    expect(indexReferences("Packages", packages)).toEqual({
      files: ["pool/main/a/a/a_1_amd64.deb", "pool/main/b/b/b_1_all.deb"],
      sha256: ["a".repeat(64)],
    });
    const sources = [
      "Package: s",
      "Directory: pool/main/s/s",
      "Files:",
      " 0123 10 s_1.dsc",
      " 4567 20 s_1.tar.xz",
      "Checksums-Sha256:",
      ` ${"b".repeat(64)} 10 s_1.dsc`,
      ` ${"c".repeat(64)} 20 s_1.tar.xz`,
      "",
    ].join("\n");
    expect(indexReferences("Sources", sources)).toEqual({
      files: ["pool/main/s/s/s_1.dsc", "pool/main/s/s/s_1.tar.xz"],
      sha256: ["b".repeat(64), "c".repeat(64)],
    });
  });
});

describe("formatGcReport", () => {
  it("sums what went and says when nothing did", () => {
    const text = formatGcReport({
      dryRun: true,
      pool: [
        {
          prefix: ".",
          generations: 2,
          referenced: 3,
          removedCount: 2,
          removed: ["pool/a", "pool/b"],
          bytesFreed: 2048,
        },
        {
          prefix: "x",
          generations: 1,
          referenced: 0,
          removedCount: 0,
          removed: [],
          bytesFreed: 0,
          skipped: "x is missing",
        },
      ],
      packagesRemoved: 1,
      packages: ["Pamd64 a 1 0"],
      blobs: { removed: 4, kept: 9, bytesFreed: 4096, tempRemoved: 0 },
      uploads: ["u-1"],
    });
    expect(text).toMatch(/pool files would remove\s+2 \(/);
    expect(text).toMatch(/packages would remove\s+1/);
    expect(text).toMatch(/blobs would remove\s+4 .*9 kept/);
    expect(text).toContain("prefix x: left alone: x is missing");
    expect(text).toContain("Dry run: nothing was changed.");
  });
});

for (const dialect of DIALECTS) {
  describe(`garbage collection (${dialect})`, () => {
    let t: TestHub;
    let work: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-gc-"));
    });
    afterAll(async () => {
      await t?.cleanup();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const gc = async (opts: { dryRun?: boolean } = {}): Promise<GcReport> => {
      const answer = await t.admin.repoTask<GcReport>(
        "POST",
        `/api/v1/gc?minAge=0${opts.dryRun ? "&dryRun=true" : ""}`,
      );
      expect(answer.task.state).toBe("closed");
      return answer.result as GcReport;
    };
    const poolRoot = () => path.join(t.dataDir, "public", "gcp");
    const blobs = () => t.hub.deps.blobs;
    const packageRows = async () =>
      (await t.hub.deps.db.kysely.selectFrom("packages").select("key").orderBy("key").execute()).map(
        (r) => r.key,
      );
    const snapshotOfState = async () => ({
      pool: walk(poolRoot()),
      packages: await packageRows(),
      blobs: await (async () => {
        const out: string[] = [];
        for await (const h of blobs().list()) out.push(h);
        return out;
      })(),
      uploads: await t.hub.deps.uploads.areas(),
    });

    /** Fetches every pool file the live Packages lists, checking its content against the index. */
    const fetchAllServed = async (): Promise<string[]> => {
      const index = await (await fetch(`${t.url}/apt/gcp/dists/stable/main/binary-amd64/Packages`)).text();
      const stanzas = index.split("\n\n").filter((s) => s.trim() !== "");
      const names: string[] = [];
      for (const s of stanzas) {
        const filename = /^Filename: (.+)$/m.exec(s)?.[1] ?? "";
        const hash = /^SHA256: (.+)$/m.exec(s)?.[1] ?? "";
        const res = await fetch(`${t.url}/apt/gcp/${filename}`);
        expect(res.status, filename).toBe(200);
        expect(sha256(Buffer.from(await res.arrayBuffer())), filename).toBe(hash);
        names.push(/^Package: (.+)$/m.exec(s)?.[1] ?? "");
      }
      return names.sort();
    };

    it("removes pool files only pruned generations listed; the kept ones roll back intact", async () => {
      const c = t.admin;
      await c.createRepo({ name: "gc-repo" });
      const keep = buildDeb(work, { name: "keeper", version: "1.0" });
      const debs = [1, 2, 3, 4, 5, 6, 7].map((i) => buildDeb(work, { name: `p${i}`, version: `${i}.0` }));
      await c.addToRepo("gc-repo", { upload: await upload(c, [keep, debs[0] as string]) });
      const first = await c.publish({
        prefix: "gcp",
        distribution: "stable",
        sourceKind: "local",
        sources: [{ component: "main", name: "gc-repo" }],
        skipSigning: true,
      });
      expect(first.result?.generation).toBe(1);
      for (let i = 2; i <= 7; i++) {
        await c.addToRepo("gc-repo", { upload: await upload(c, [debs[i - 1] as string]) });
        await c.removeFromRepo("gc-repo", `p${i - 1}`);
        const next = await c.publicationAction("gcp", "stable", "update");
        expect(next.result?.generation).toBe(i);
      }
      // Five generations stay on disk (3..7); p1 and p2 are listed only by pruned ones.
      const gens = readdirSync(path.join(poolRoot(), "dists", ".gen", "stable")).map(Number);
      expect(gens.sort((a, b) => a - b)).toEqual([3, 4, 5, 6, 7]);
      const poolFile = (i: number) => `pool/main/p/p${i}/p${i}_${i}.0_amd64.deb`;
      const before = await snapshotOfState();
      for (let i = 1; i <= 7; i++) expect(before.pool).toContain(poolFile(i));
      const hashOf = (f: string) => sha256(readFileSync(f));
      const p1Blob = hashOf(debs[0] as string);
      const p3Blob = hashOf(debs[2] as string);
      expect(await blobs().has(p1Blob)).toBe(true);

      // A dry run reports and changes nothing.
      const dry = await gc({ dryRun: true });
      expect(dry.dryRun).toBe(true);
      const dryPool = dry.pool.find((p) => p.prefix === "gcp");
      expect(dryPool?.removed.sort()).toEqual([poolFile(1), poolFile(2)]);
      expect(dry.packages.some((k) => k.includes(" p1 "))).toBe(true);
      expect(await snapshotOfState()).toEqual(before);

      const report = await gc();
      const gcp = report.pool.find((p) => p.prefix === "gcp");
      expect(gcp).toMatchObject({ generations: 5, removedCount: 2 });
      expect(gcp?.removed.sort()).toEqual([poolFile(1), poolFile(2)]);
      expect(gcp?.bytesFreed).toBeGreaterThan(0);
      const after = walk(poolRoot());
      expect(after).not.toContain(poolFile(1));
      expect(after).not.toContain(poolFile(2));
      for (let i = 3; i <= 7; i++) expect(after).toContain(poolFile(i));
      // Their directories went with them.
      expect(existsSync(path.join(poolRoot(), "pool", "main", "p", "p1"))).toBe(false);

      // p1 and p2 are in no repo, snapshot or generation: rows and blobs go. p3..p6 are kept by
      // generations on disk, p7 and keeper by the repo.
      const rows = await packageRows();
      expect(rows.some((k) => k.includes(" p1 ") || k.includes(" p2 "))).toBe(false);
      for (const n of ["p3", "p4", "p5", "p6", "p7", "keeper"])
        expect(rows.some((k) => k.includes(` ${n} `))).toBe(true);
      expect(await blobs().has(p1Blob)).toBe(false);
      expect(await blobs().has(p3Blob)).toBe(true);
      expect(await blobs().has(hashOf(keep))).toBe(true);

      // A second run finds nothing more.
      const again = await gc();
      expect(again.pool.find((p) => p.prefix === "gcp")?.removed).toEqual([]);
      expect(again.packages).toEqual([]);

      // The oldest kept generation still serves every file it lists.
      const back = await c.publicationAction("gcp", "stable", "rollback", { to: 3 });
      expect(back.result?.generation).toBe(3);
      expect(await fetchAllServed()).toEqual(["keeper", "p3"]);
      const fwd = await c.publicationAction("gcp", "stable", "rollback", { to: 7 });
      expect(fwd.result?.generation).toBe(7);
      expect(await fetchAllServed()).toEqual(["keeper", "p7"]);
    });

    it("a dropped snapshot's own packages go; build artifacts stay", async () => {
      const c = t.admin;
      const deps = t.hub.deps;
      await c.createRepo({ name: "snap-repo" });
      const uniq = buildDeb(work, { name: "uniq", version: "1.0" });
      const shared = buildDeb(work, { name: "shared", version: "1.0" });
      await c.addToRepo("snap-repo", { upload: await upload(c, [uniq, shared]) });
      await c.createSnapshot({ name: "snap1", from: { kind: "repo", repo: "snap-repo" } });
      await c.removeFromRepo("snap-repo", "uniq");

      // A build whose artifact became a package row when something looked at it.
      const builtDeb = buildDeb(path.join(work), { name: "built", version: "3.0" });
      const buildId = await seedBuild(deps, {
        source: "built",
        version: "3.0",
        files: [{ path: builtDeb, kind: "deb", arch: "amd64" }],
      });
      const derived = await packagesOfBuild(publishDeps(deps), buildId);
      expect(derived).toHaveLength(1);

      // Still in a snapshot: kept.
      let report = await gc();
      let rows = await packageRows();
      expect(rows.some((k) => k.includes(" uniq "))).toBe(true);
      expect(await blobs().has(sha256(readFileSync(uniq)))).toBe(true);

      await c.dropSnapshot("snap1");
      report = await gc();
      rows = await packageRows();
      expect(report.packages.some((k) => k.includes(" uniq "))).toBe(true);
      expect(rows.some((k) => k.includes(" uniq "))).toBe(false);
      expect(await blobs().has(sha256(readFileSync(uniq)))).toBe(false);
      expect(rows.some((k) => k.includes(" shared "))).toBe(true);
      expect(await blobs().has(sha256(readFileSync(shared)))).toBe(true);
      // The build's package row is made again on demand; its artifact's blob is never collected.
      expect(rows.some((k) => k.includes(" built "))).toBe(false);
      expect(await blobs().has(sha256(readFileSync(builtDeb)))).toBe(true);
      expect(await packagesOfBuild(publishDeps(deps), buildId)).toHaveLength(1);
    });

    it("a publish running beside gc is never broken: the pool lock puts them in line", async () => {
      const c = t.admin;
      const extra = [8, 9, 10].map((i) => buildDeb(work, { name: `q${i}`, version: `${i}.0` }));
      const runs: Promise<unknown>[] = [];
      const gcTasks: number[] = [];
      for (const [n, deb] of extra.entries()) {
        await c.addToRepo("gc-repo", { upload: await upload(c, [deb]) });
        if (n > 0) await c.removeFromRepo("gc-repo", `q${n + 7}`);
        runs.push(c.publicationAction("gcp", "stable", "update"));
        runs.push(
          c.repoTask<GcReport>("POST", "/api/v1/gc?minAge=0").then((a) => {
            gcTasks.push(a.task.id);
            return a;
          }),
        );
      }
      await Promise.all(runs);
      // Each gc held the prefix's pool lock exclusively.
      const rows = await t.hub.deps.db.kysely
        .selectFrom("tasks")
        .select("locks")
        .where("id", "in", gcTasks)
        .execute();
      expect(rows).toHaveLength(3);
      for (const r of rows) {
        expect(JSON.parse(r.locks ?? "[]")).toContainEqual({ resource: "pool:gcp", exclusive: true });
      }
      // ...so no gc ran while a publish of the prefix did (the hub's clock orders them).
      const spans = await t.hub.deps.db.kysely
        .selectFrom("tasks")
        .select(["id", "method", "claimed_at", "completed_at"])
        .where("method", "in", ["gc", "publishUpdate"])
        .where("state", "=", "closed")
        .execute();
      for (const g of spans.filter((r) => gcTasks.includes(r.id))) {
        for (const p of spans.filter((r) => r.method === "publishUpdate")) {
          const apart =
            Number(g.completed_at) <= Number(p.claimed_at) || Number(p.completed_at) <= Number(g.claimed_at);
          expect(apart, `gc ${g.id} overlaps publish ${p.id}`).toBe(true);
        }
      }
      expect(await fetchAllServed()).toEqual(["keeper", "p7", "q10"]);
      // Every kept generation can still be served in full.
      const gens = readdirSync(path.join(poolRoot(), "dists", ".gen", "stable"))
        .map(Number)
        .sort((a, b) => a - b);
      for (const g of gens) {
        await c.publicationAction("gcp", "stable", "rollback", { to: g });
        expect((await fetchAllServed()).length).toBeGreaterThan(0);
      }
    });

    it("removes upload areas of completed builds and stale ones, keeps those in use", async () => {
      const deps = t.hub.deps;
      const fresh = await deps.uploads.create();
      const stale = await deps.uploads.create();
      const built = await deps.uploads.create();
      const queued = await deps.uploads.create();
      const chained = await deps.uploads.create();
      const old = new Date(Date.now() - 3 * 24 * 3_600_000);
      for (const a of [stale, queued, chained]) utimesSync(a.dir, old, old);

      const closedBuild = await createTask(deps, {
        method: "build",
        args: { upload: built.id },
        owner: "admin",
        channel: "nowhere",
      });
      await deps.db.kysely
        .updateTable("tasks")
        .set({ state: "closed" })
        .where("id", "=", closedBuild.id)
        .execute();
      // Queued on a channel no host serves: it stays unfinished, and so does its area.
      await createTask(deps, {
        method: "build",
        args: { upload: queued.id },
        owner: "admin",
        channel: "nowhere",
      });
      // A chain build keeps a later group's source nested in its args until that group starts.
      const chain = await createTask(deps, {
        method: "sleep",
        args: { seconds: 1 },
        owner: "admin",
        channel: "nowhere",
      });
      await deps.db.kysely
        .updateTable("tasks")
        .set({ args: JSON.stringify({ groups: [[{ upload: "elsewhere" }], [{ upload: chained.id }]] }) })
        .where("id", "=", chain.id)
        .execute();

      const dry = await gc({ dryRun: true });
      expect(dry.uploads.sort()).toEqual([built.id, stale.id].sort());
      expect(await deps.uploads.exists(built.id)).toBe(true);

      const report = await gc();
      expect(report.uploads.sort()).toEqual([built.id, stale.id].sort());
      expect(await deps.uploads.exists(fresh.id)).toBe(true);
      expect(await deps.uploads.exists(queued.id)).toBe(true);
      expect(await deps.uploads.exists(chained.id)).toBe(true);
      expect(await deps.uploads.exists(stale.id)).toBe(false);
      expect(await deps.uploads.exists(built.id)).toBe(false);
    });

    it("the hub queues a collection every gc_interval seconds", async () => {
      const dataDir = mkdtempSync(path.join(os.tmpdir(), "kiln-gc-timer-"));
      const pg = dialect === "postgres" ? await createPgDatabase() : undefined;
      const hub = await startHub(
        {
          data: dataDir,
          listen: { host: "127.0.0.1", port: 0 },
          db: pg ? pg.url : `sqlite://${path.join(dataDir, "kiln.db")}`,
          worker: false,
          workerName: undefined,
          logLevel: "silent",
          engine: DEFAULT_ENGINE,
          policies: {},
          uploadLimitBytes: 1024 * 1024,
          gcInterval: 1,
        },
        { log: silentLog, lazyArchiveKey: true },
      );
      try {
        const stale = await hub.deps.uploads.create();
        const old = new Date(Date.now() - 3 * 24 * 3_600_000);
        utimesSync(stale.dir, old, old);
        await waitFor(
          "a scheduled gc",
          async () =>
            (await hub.deps.db.kysely
              .selectFrom("tasks")
              .select("id")
              .where("method", "=", "gc")
              .where("state", "=", "closed")
              .where("owner", "=", "kiln")
              .executeTakeFirst()) !== undefined,
          30_000,
        );
        expect(await hub.deps.uploads.exists(stale.id)).toBe(false);
      } finally {
        await hub.close();
        await pg?.drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    });

    it("is for admins only", async () => {
      const { token } = await t.admin.createToken({ user: "gc-user", role: "user" });
      await expect(t.client(token).repoTask("POST", "/api/v1/gc")).rejects.toMatchObject({
        code: "ADMIN_REQUIRED",
      });
    });
  });
}
