/**
 * Publishing under concurrency: parallel `repo add`s into a published repo, publishes interleaved
 * with adds, and many publishes while real apt clients keep updating against the archive.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import type { TaskJson } from "../../src/client/types.js";
import { AptClient, type AptResult } from "../helpers/apt.js";
import { DIALECTS } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

async function upload(client: KilnClient, files: string[]): Promise<string> {
  const { id } = await client.createUpload();
  for (const f of files) await client.uploadFile(id, path.basename(f), readFileSync(f));
  return id;
}

/** `name version` of every stanza of a Packages index. */
function servedPackages(index: string): string[] {
  return index
    .split(/\n\n+/)
    .filter((s) => s.trim() !== "")
    .map((s) => `${/^Package: (.+)$/m.exec(s)?.[1]} ${/^Version: (.+)$/m.exec(s)?.[1]}`)
    .sort();
}

async function repoContents(client: KilnClient, repo: string): Promise<string[]> {
  const shown = await client.showRepo(repo, { withPackages: true });
  return (shown.packages ?? []).map((p) => `${p.name} ${p.version}`).sort();
}

/**
 * Samples, until stopped, which of the tasks queued after `afterId` are running (claimed or open):
 * each sample is one statement, one consistent view. Tasks serialized by a lock never show up
 * two at a time. (Their started/completed times cannot show it: each is read from the clock
 * before its statement waits for the database.)
 */
async function watchRunning(t: TestHub) {
  const db = t.hub.deps.db.kysely;
  const last = await db
    .selectFrom("tasks")
    .select((eb) => eb.fn.max<number>("id").as("id"))
    .executeTakeFirst();
  const afterId = Number(last?.id ?? 0);
  let stopped = false;
  const together: number[][] = [];
  const seen = new Set<number>();
  const loop = (async () => {
    while (!stopped) {
      const rows = await db
        .selectFrom("tasks")
        .select("id")
        .where("id", ">", afterId)
        .where("state", "in", ["assigned", "open"])
        .execute();
      for (const r of rows) seen.add(r.id);
      if (rows.length > 1) together.push(rows.map((r) => r.id));
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { together, seen };
    },
  };
}

// The .debs are made before any hub runs: dpkg-deb runs synchronously and would stall it.
let work: string;
const debs = { initial: "", parallel: [] as string[], interleaved: [] as string[], stress: [] as string[] };
beforeAll(() => {
  work = mkdtempSync(path.join(os.tmpdir(), "kiln-conc-"));
  debs.initial = buildDeb(work, { name: "base-kiln", version: "1.0" });
  for (let i = 0; i < 20; i++) debs.parallel.push(buildDeb(work, { name: `par-${i}`, version: `1.${i}` }));
  for (let i = 0; i < 10; i++) debs.interleaved.push(buildDeb(work, { name: `mix-${i}`, version: "1.0" }));
  for (let i = 0; i < 50; i++) debs.stress.push(buildDeb(work, { name: `stress-${i}`, version: `0.${i}` }));
}, 300_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

for (const dialect of DIALECTS) {
  describe(`publishing under concurrency (${dialect})`, () => {
    let t: TestHub;
    let keyring: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      const armored = await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text();
      keyring = path.join(work, `keyring-${dialect}.gpg`);
      execFileSync("gpg", ["--dearmor", "--yes", "-o", keyring], { input: armored });
    });
    afterAll(async () => {
      await t?.cleanup();
    });

    it("20 parallel adds into a published repo: all in, none refused, one at a time", async () => {
      const c = t.admin;
      await c.createRepo({ name: "par" });
      await c.addToRepo("par", { upload: await upload(c, [debs.initial]) });
      await c.publish({
        prefix: "par",
        distribution: "stable",
        sourceKind: "local",
        sources: [{ component: "main", name: "par" }],
      });
      // Each add with its own upload area, all sent at once.
      const uploads = await Promise.all(debs.parallel.map((d) => upload(c, [d])));
      const watch = await watchRunning(t);
      const answers = await Promise.all(uploads.map((u) => c.addToRepo("par", { upload: u })));
      const running = await watch.stop();
      for (const a of answers) {
        expect(a.task.state).toBe("closed");
        expect(a.result).toMatchObject({ added: 1, failed: 0, existing: 0 });
      }
      const expected = ["base-kiln 1.0", ...debs.parallel.map((_, i) => `par-${i} 1.${i}`)].sort();
      expect(await repoContents(c, "par")).toEqual(expected);
      // The repo lock put them in line: never two running at once.
      const tasks = await Promise.all(answers.map((a) => c.getTask(a.task.id)));
      for (const task of tasks) expect(task.locks).toContainEqual({ resource: "repo:par", exclusive: true });
      expect(running.together).toEqual([]);
      expect(running.seen.size, "the watch saw the adds run").toBeGreaterThanOrEqual(5);
      // The live publication was not disturbed; a republish serves all of them.
      const up = await c.publicationAction("par", "stable", "update");
      expect(up.result?.packageCount).toBe(21);
      const served = await (await fetch(`${t.url}/apt/par/dists/stable/main/binary-amd64/Packages`)).text();
      expect(servedPackages(served)).toEqual(expected);
    }, 300_000);

    it("10 publishes interleaved with 10 adds: all succeed, generations in order, last one serves the repo", async () => {
      const c = t.admin;
      await c.createRepo({ name: "mix" });
      await c.addToRepo("mix", { upload: await upload(c, [debs.initial]) });
      const first = await c.publish({
        prefix: "mix",
        distribution: "stable",
        sourceKind: "local",
        sources: [{ component: "main", name: "mix" }],
      });
      expect(first.result?.generation).toBe(1);
      const uploads = await Promise.all(debs.interleaved.map((d) => upload(c, [d])));
      type Answer = { kind: "add" | "publish"; task: TaskJson; generation?: number; count?: number };
      const watch = await watchRunning(t);
      const jobs: Promise<Answer>[] = [];
      for (let i = 0; i < 10; i++) {
        jobs.push(
          c.addToRepo("mix", { upload: uploads[i] as string }).then((a) => {
            expect(a.result).toMatchObject({ added: 1, failed: 0 });
            return { kind: "add", task: a.task };
          }),
        );
        jobs.push(
          c.publicationAction("mix", "stable", "update").then((a) => ({
            kind: "publish",
            task: a.task,
            generation: a.result?.generation,
            count: a.result?.packageCount,
          })),
        );
      }
      const answers = await Promise.all(jobs);
      const running = await watch.stop();
      for (const a of answers) expect(a.task.state).toBe("closed");

      // Adds take the repo lock, publishes the distribution's lock and the repo's shared: all
      // twenty ran one at a time. Generations are new and distinct, and a later generation
      // never holds fewer packages (adds only add).
      expect(running.together).toEqual([]);
      expect(running.seen.size, "the watch saw the tasks run").toBeGreaterThanOrEqual(5);
      const publishes = answers
        .filter((a) => a.kind === "publish")
        .sort((a, b) => (a.generation ?? 0) - (b.generation ?? 0));
      expect(new Set(publishes.map((p) => p.generation)).size).toBe(10);
      let previous = { generation: 1, count: 1 };
      for (const p of publishes) {
        expect(p.generation).toBeGreaterThan(previous.generation);
        expect(p.count).toBeGreaterThanOrEqual(previous.count);
        expect(p.count).toBeLessThanOrEqual(11);
        previous = { generation: p.generation as number, count: p.count as number };
      }
      const lastGeneration = previous.generation;

      const shown = await c.showPublication("mix", "stable");
      expect(shown.liveGeneration).toBe(lastGeneration);
      expect(shown.history?.every((h) => h.state === "live" || h.state === "retired")).toBe(true);
      // What is served is what the repo held when the last publish ran (adds that ran after it
      // are in the repo, not yet published).
      const served = servedPackages(
        await (await fetch(`${t.url}/apt/mix/dists/stable/main/binary-amd64/Packages`)).text(),
      );
      expect(served).toHaveLength(previous.count);
      const contents = await repoContents(c, "mix");
      expect(contents).toHaveLength(11);
      for (const p of served) expect(contents).toContain(p);
      // One more publish with nothing queued: exactly the repo's final contents.
      await c.publicationAction("mix", "stable", "update");
      expect(
        servedPackages(
          await (await fetch(`${t.url}/apt/mix/dists/stable/main/binary-amd64/Packages`)).text(),
        ),
      ).toEqual(contents);
    }, 300_000);

    it("50 publishes while 4 apt clients update without pause: apt never trips", async () => {
      const c = t.admin;
      await c.createRepo({ name: "busy" });
      await c.addToRepo("busy", { upload: await upload(c, [debs.initial]) });
      await c.publish({
        prefix: ".",
        distribution: "busy",
        sourceKind: "local",
        sources: [{ component: "main", name: "busy" }],
      });
      const uploads = await Promise.all(debs.stress.map((d) => upload(c, [d])));

      let publishing = true;
      const clients = Array.from(
        { length: 4 },
        () => new AptClient(`deb [signed-by=${keyring}] ${t.url}/apt busy main`),
      );
      const results: AptResult[] = [];
      const loops = clients.map(async (apt) => {
        while (publishing) results.push(await apt.update());
        results.push(await apt.update()); // and once more against the final generation
      });
      try {
        for (const [i, u] of uploads.entries()) {
          await c.addToRepo("busy", { upload: u });
          const pub = await c.publicationAction(".", "busy", "update");
          expect(pub.result?.generation).toBe(i + 2);
        }
      } finally {
        publishing = false;
        await Promise.all(loops);
      }
      try {
        expect(results.length).toBeGreaterThanOrEqual(8);
        const failures = results.filter(
          (r) =>
            r.code !== 0 ||
            /Hash Sum mismatch/i.test(r.stdout + r.stderr) ||
            /^(W|E|Err):/m.test(r.stdout + r.stderr),
        );
        expect(
          failures.map((f) => `${f.code}\n${f.stdout}\n${f.stderr}`),
          `${failures.length} of ${results.length} updates failed`,
        ).toEqual([]);
        // Every client ends on the last generation: all 51 packages.
        for (const apt of clients) {
          const dl = await apt.run("download", "stress-49=0.49");
          expect(dl.code, dl.stderr).toBe(0);
        }
      } finally {
        for (const apt of clients) apt.cleanup();
      }
    }, 900_000);
  });
}
