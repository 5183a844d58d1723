/**
 * `kill -9` of a hub process in the middle of a publish: what was live stays served intact, the
 * cut-off generation is recorded as failed, publishing works again after a restart, and rollback
 * gives back the old Release byte for byte. And in the middle of a repo add: nothing of it is
 * added, the uploads its blobs link to are whole, and the requeued add adds everything.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import { makeDeb } from "../debian/helpers.js";
import { createPgDatabase, DIALECTS, postgresAvailable } from "../helpers/db.js";
import { freePort, startHubProcess, stop, waitFor, type HubProc } from "../helpers/procs.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** A hand-made .deb whose long description makes the Packages index (and so the publish) big. */
function bigDeb(i: number): Buffer {
  const filler = Array.from({ length: 300 }, (_, j) => ` line ${j} of package ${i}: ${"x".repeat(60)}`);
  const control = [
    `Package: big-${i}`,
    "Version: 1.0",
    "Architecture: amd64",
    "Maintainer: Kiln Tests <tests@example.org>",
    `Description: package ${i} with a long description`,
    ...filler,
    "",
  ].join("\n");
  return makeDeb({ control: [{ path: "./control", content: control }] });
}

async function upload(client: KilnClient, files: Record<string, Buffer>): Promise<string> {
  const { id } = await client.createUpload();
  for (const [name, data] of Object.entries(files)) await client.uploadFile(id, name, data);
  return id;
}

/** `SHA256:` entries of a Release: path → [sha256, size]. */
function releaseSha256(release: string): Map<string, [string, number]> {
  const block = /^SHA256:\n((?: .*\n)+)/m.exec(release)?.[1] ?? "";
  const out = new Map<string, [string, number]>();
  for (const line of block.split("\n").filter(Boolean)) {
    const [hash, size, file] = line.trim().split(/\s+/);
    out.set(file as string, [hash as string, Number(size)]);
  }
  return out;
}

/** Filename and SHA256 of every stanza of a Packages index. */
function poolFiles(packages: string): [string, string][] {
  return packages
    .split(/\n\n+/)
    .filter((s) => s.trim() !== "")
    .map((s) => [/^Filename: (.+)$/m.exec(s)?.[1] ?? "", /^SHA256: (.+)$/m.exec(s)?.[1] ?? ""]);
}

/**
 * Checks a distribution as a client would find it, through `read` (from disk or over HTTP): every
 * file its Release names, by path (unless `byHashOnly`) and by hash, and every pool file its
 * Packages names, with the right hash.
 */
async function checkDistribution(
  read: (rel: string) => Promise<Buffer | undefined>,
  release: string,
  dist: string,
  byHashOnly = false,
): Promise<number> {
  let checked = 0;
  const entries = releaseSha256(release);
  expect(entries.size).toBeGreaterThan(3);
  for (const [file, [hash, size]] of entries) {
    const byHash = `dists/${dist}/${path.posix.dirname(file)}/by-hash/SHA256/${hash}`;
    for (const rel of byHashOnly ? [byHash] : [`dists/${dist}/${file}`, byHash]) {
      const data = await read(rel);
      expect(data, rel).toBeDefined();
      expect(data?.length, rel).toBe(size);
      expect(sha256(data as Buffer), rel).toBe(hash);
      checked++;
    }
    if (path.posix.basename(file) === "Packages") {
      const packages = (await read(byHash))?.toString() ?? "";
      for (const [filename, hash2] of poolFiles(packages)) {
        const data = await read(filename);
        expect(data, filename).toBeDefined();
        expect(sha256(data as Buffer), filename).toBe(hash2);
        checked++;
      }
    }
  }
  return checked;
}

describe.each(dialects)("publishing under a hub killed with -9, on %s", (dialect) => {
  let dir: string;
  let dataDir: string;
  let db: string | undefined;
  let dropDb: (() => Promise<void>) | undefined;
  let hub: HubProc | undefined;
  let port: number;
  let keyring: string;

  const start = async () => {
    hub = await startHubProcess({ dataDir, port, worker: false, ...(db ? { db } : {}) });
    return hub;
  };
  const http = async (rel: string): Promise<Buffer | undefined> => {
    const res = await fetch(`${hub?.url}/apt/${rel}`);
    return res.ok ? Buffer.from(await res.arrayBuffer()) : undefined;
  };
  const disk = (rel: string): Promise<Buffer | undefined> => {
    const file = path.join(dataDir, "public", ...rel.split("/"));
    return Promise.resolve(existsSync(file) ? readFileSync(file) : undefined);
  };
  const gpgv = (files: Record<string, Buffer>, args: string[]) => {
    for (const [name, data] of Object.entries(files)) writeFileSync(path.join(dir, name), data);
    execFileSync("gpgv", ["--keyring", keyring, ...args.map((a) => path.join(dir, a))], { stdio: "pipe" });
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-pubfault-"));
    dataDir = path.join(dir, "data");
    port = await freePort();
    if (dialect === "postgres") {
      const pg = await createPgDatabase();
      db = pg.url;
      dropDb = () => pg.drop();
    }
  });
  afterEach(async () => {
    await stop(hub);
  });
  afterAll(async () => {
    await dropDb?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps the live generation intact, marks the cut-off one failed, publishes again, rolls back", async () => {
    let h = await start();
    const armored = await (await fetch(`${h.url}/apt/kiln-archive-keyring.asc`)).text();
    keyring = path.join(dir, "keyring.gpg");
    execFileSync("gpg", ["--dearmor", "--yes", "-o", keyring], { input: armored });

    await h.admin.createRepo({ name: "big" });
    const small: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) small[`big-${i}_1.0_amd64.deb`] = bigDeb(i);
    expect((await h.admin.addToRepo("big", { upload: await upload(h.admin, small) })).result?.added).toBe(3);
    const first = await h.admin.publish({
      prefix: ".",
      distribution: "stable",
      sourceKind: "local",
      sources: [{ component: "main", name: "big" }],
    });
    expect(first.result?.generation).toBe(1);
    const release1 = (await http("dists/stable/Release")) as Buffer;
    expect(sha256(release1)).toBe(first.result?.releaseSha256);

    // Enough packages that writing, compressing, signing and checking the indexes takes a while.
    const many: Record<string, Buffer> = {};
    for (let i = 3; i < 400; i++) many[`big-${i}_1.0_amd64.deb`] = bigDeb(i);
    const added = await h.admin.addToRepo("big", { upload: await upload(h.admin, many) });
    expect(added.result).toMatchObject({ added: 397, failed: 0 });

    // The publish starts; once its staging directory is there, the hub dies with no warning.
    const staging = path.join(dataDir, "staging");
    const queued = await h.admin.publicationAction(".", "stable", "update", {}, true);
    const taskId = queued.task.id;
    await waitFor(
      "the publish to be writing its staging directory",
      () => {
        const names = readdirSync(staging);
        if (names.length > 0) {
          h.child.kill("SIGKILL");
          return true;
        }
        if (existsSync(path.join(dataDir, "public/dists/.gen/stable/2")))
          throw new Error("the publish finished before it could be interrupted; make it bigger");
        return false;
      },
      60_000,
      1,
    );
    expect(await h.exited).toBe("SIGKILL");

    // What clients see is still generation 1, whole: the Release they had, signed, every file it
    // names (by path and by hash) and every pool file its Packages names, with the right hashes.
    expect(readlinkSync(path.join(dataDir, "public/dists/stable"))).toBe(".gen/stable/1");
    expect((await disk("dists/stable/Release"))?.equals(release1)).toBe(true);
    gpgv(
      {
        Release: release1,
        "Release.gpg": (await disk("dists/stable/Release.gpg")) as Buffer,
        InRelease: (await disk("dists/stable/InRelease")) as Buffer,
      },
      ["Release.gpg", "Release"],
    );
    gpgv({}, ["InRelease"]);
    expect(await checkDistribution(disk, release1.toString(), "stable")).toBeGreaterThan(10);

    // After a restart the publish, requeued, runs again and succeeds; what generation 1 promised
    // is still served over HTTP meanwhile (by-hash files are carried over, pool files stay).
    h = await start();
    expect(await checkDistribution(http, release1.toString(), "stable", true)).toBeGreaterThan(5);
    const done = await waitFor(
      `task ${taskId} to end`,
      async () => {
        const task = await h.admin.getTask(taskId);
        return ["closed", "failed", "canceled"].includes(task.state) ? task : undefined;
      },
      120_000,
      200,
    );
    expect(done.state, JSON.stringify(done.error)).toBe("closed");
    expect(done.result).toMatchObject({ generation: 3, packageCount: 400 });
    const shown = await h.admin.showPublication(".", "stable");
    expect(shown.liveGeneration).toBe(3);
    expect(shown.history?.map((g) => [g.generation, g.state])).toEqual([
      [3, "live"],
      [2, "failed"],
      [1, "retired"],
    ]);
    expect(shown.history?.find((g) => g.generation === 2)?.error).toMatch(/interrupted/);
    expect(readdirSync(staging)).toEqual([]);
    const release3 = (await http("dists/stable/Release")) as Buffer;
    expect(sha256(release3)).toBe(done.result && (done.result as { releaseSha256: string }).releaseSha256);
    expect(await checkDistribution(http, release3.toString(), "stable")).toBeGreaterThan(400);

    // Publishing by hand works too; rollback gives back the Release before, byte for byte, and
    // generation 1's to the byte as well.
    const again = await h.admin.publicationAction(".", "stable", "update");
    expect(again.result?.generation).toBe(4);
    const back = await h.admin.publicationAction(".", "stable", "rollback");
    expect(back.result?.generation).toBe(3);
    expect((await http("dists/stable/Release"))?.equals(release3)).toBe(true);
    const toFirst = await h.admin.publicationAction(".", "stable", "rollback", { to: 1 });
    expect(toFirst.result?.generation).toBe(1);
    expect((await http("dists/stable/Release"))?.equals(release1)).toBe(true);
    expect(await checkDistribution(http, release1.toString(), "stable")).toBeGreaterThan(10);
  }, 600_000);

  it("adds nothing of a repo add cut off by kill -9, then all of it when the task runs again", async () => {
    let h = await start();
    await h.admin.createRepo({ name: "cut" });
    const debs: Record<string, Buffer> = {};
    for (let i = 0; i < 600; i++) {
      debs[`cut-${i}_1.0_amd64.deb`] = makeDeb({
        control: [
          {
            path: "./control",
            content: `Package: cut-${i}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: Kiln Tests <tests@example.org>\nDescription: cut ${i}\n`,
          },
        ],
      });
    }
    const uploadId = await upload(h.admin, debs);
    const blobDir = path.join(dataDir, "blobs", "sha256");
    const before = existsSync(blobDir) ? readdirSync(blobDir).length : 0;
    const queued = await h.admin.addToRepo("cut", { upload: uploadId, removeUpload: "none" }, true);
    const taskId = queued.task.id;
    // Once the add is storing blobs (hard links of the uploads), the hub dies with no warning.
    await waitFor(
      "the add to be storing blobs",
      () => {
        if (existsSync(blobDir) && readdirSync(blobDir).length > before) {
          h.child.kill("SIGKILL");
          return true;
        }
        return false;
      },
      60_000,
      1,
    );
    expect(await h.exited).toBe("SIGKILL");

    h = await start();
    // Nothing half-added: the repo holds none of them or, once the requeued task has run, all.
    const done = await waitFor(
      `task ${taskId} to end`,
      async () => {
        const task = await h.admin.getTask(taskId);
        if (!["closed", "failed", "canceled"].includes(task.state)) {
          const partial = (await h.admin.showRepo("cut")).packageCount;
          if (partial !== 0 && partial !== 600) throw new Error(`the repo holds ${partial} of 600`);
          return undefined;
        }
        return task;
      },
      120_000,
      100,
    );
    expect(done.state, JSON.stringify(done.error)).toBe("closed");
    expect(done.result).toMatchObject({ added: 600, failed: 0 });
    expect((await h.admin.showRepo("cut")).packageCount).toBe(600);
    // The uploads are whole (their blobs are links to them), and so is every stored blob.
    for (const [name, data] of Object.entries(debs)) {
      expect(sha256(readFileSync(path.join(dataDir, "upload", uploadId, name))), name).toBe(sha256(data));
      const hash = sha256(data);
      expect(sha256(readFileSync(path.join(blobDir, hash.slice(0, 2), hash.slice(2, 4), hash))), name).toBe(
        hash,
      );
    }
    expect(readdirSync(path.join(dataDir, "blobs", "tmp"))).toEqual([]);
  }, 600_000);
});
