import { createHash, randomBytes } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BlobStore, type PutResult } from "../../src/artifacts/blob-store.js";
import {
  endlessSource,
  expectKilnError,
  filesUnder,
  gatedSource,
  makeTempDir,
  sha256sum,
} from "./helpers.js";

const HOUR = 60 * 60 * 1000;
const sha = (b: Buffer | string): string => createHash("sha256").update(b).digest("hex");

async function age(file: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(file, t, t);
}

async function collect(gen: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const h of gen) out.push(h);
  return out;
}

describe("BlobStore", () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let root: string;
  let store: BlobStore;

  beforeEach(async () => {
    tmp = await makeTempDir();
    root = path.join(tmp.dir, "blobs");
    store = new BlobStore(root);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  /** A symlink and a file on another file system (/dev/shm, a tmpfs) are copied, not linked. */
  async function expectCopiedWhereNoLink(adopt: (file: string) => Promise<PutResult>): Promise<void> {
    const target = path.join(tmp.dir, "target.bin");
    await writeFile(target, "pointed at");
    await symlink(target, path.join(tmp.dir, "link.deb"));
    const viaLink = await adopt(path.join(tmp.dir, "link.deb"));
    expect(viaLink.sha256).toBe(sha("pointed at"));
    const blob = await lstat(store.path(viaLink.sha256));
    expect(blob.isFile()).toBe(true);
    expect(blob.ino).not.toBe((await stat(target)).ino);
    expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
    const shm = await mkdtemp("/dev/shm/kiln-blob-").catch(() => undefined);
    if (!shm) return;
    try {
      const src = path.join(shm, "elsewhere.deb");
      await writeFile(src, "on another file system");
      const r = await adopt(src);
      expect(r.sha256).toBe(sha("on another file system"));
      expect((await stat(store.path(r.sha256))).ino).not.toBe((await stat(src)).ino);
      expect((await stat(src)).nlink).toBe(1);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  }

  describe("put", () => {
    it("stores content under sha256/ab/cd/<hash> with the hash and size sha256sum sees", async () => {
      const src = path.join(tmp.dir, "input.bin");
      const data = randomBytes(3 * 1024 * 1024 + 17);
      await writeFile(src, data);

      const r = await store.putFile(src);

      expect(r).toEqual({ sha256: sha256sum(src), size: data.length, existed: false });
      const at = path.join(root, "sha256", r.sha256.slice(0, 2), r.sha256.slice(2, 4), r.sha256);
      expect(store.path(r.sha256)).toBe(at);
      expect(sha256sum(at)).toBe(r.sha256);
      expect((await stat(at)).size).toBe(data.length);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
    });

    it("stores identical content once and says it existed", async () => {
      const data = Buffer.from("hello, kiln\n");
      const first = await store.putBuffer(data);
      const second = await store.put(Readable.from([data.subarray(0, 3), data.subarray(3)]));

      expect(first.existed).toBe(false);
      expect(second).toEqual({ sha256: first.sha256, size: data.length, existed: true });
      expect(await filesUnder(root)).toEqual([
        path.join("sha256", first.sha256.slice(0, 2), first.sha256.slice(2, 4), first.sha256),
      ]);
    });

    it("stores the empty blob", async () => {
      const r = await store.putBuffer(Buffer.alloc(0));
      expect(r).toEqual({ sha256: sha(""), size: 0, existed: false });
      expect(await store.verify(r.sha256)).toBe(true);
    });

    it("refuses content over maxBytes and leaves no temp file and no blob", async () => {
      const data = randomBytes(1000);
      const err = await expectKilnError(store.putBuffer(data, { maxBytes: 999 }), "PAYLOAD_TOO_LARGE");
      expect(err.details).toEqual({ maxBytes: 999 });
      expect(await filesUnder(root)).toEqual([]);
      expect(await store.has(sha(data))).toBe(false);

      // Exactly at the limit is fine.
      expect((await store.putBuffer(data, { maxBytes: 1000 })).size).toBe(1000);
    });

    it("aborts an oversized stream instead of draining it", async () => {
      const { source, state } = endlessSource(64 * 1024);
      await expectKilnError(store.put(source, { maxBytes: 1024 * 1024 }), "PAYLOAD_TOO_LARGE");
      expect(state.finished).toBe(true);
      expect(state.sent).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
      expect(await filesUnder(root)).toEqual([]);
    });

    it("refuses content that does not match expectSha256 and leaves nothing", async () => {
      const data = Buffer.from("the real content");
      const claimed = sha("other content");
      const err = await expectKilnError(
        store.putBuffer(data, { expectSha256: claimed }),
        "VALIDATION_FAILED",
      );
      expect(err.details).toEqual({ expected: claimed, actual: sha(data) });
      expect(await filesUnder(root)).toEqual([]);

      // A matching claim, in either case, is accepted.
      const ok = await store.putBuffer(data, { expectSha256: sha(data).toUpperCase() });
      expect(ok.sha256).toBe(sha(data));
    });

    it("refuses a malformed expectSha256 before reading the body", async () => {
      const { source, state } = endlessSource(1024);
      await expectKilnError(store.put(source, { expectSha256: "abc" }), "VALIDATION_FAILED");
      expect(state.sent).toBe(0);
      expect(await filesUnder(root)).toEqual([]);
    });

    it("passes a failing source's error on and leaves nothing", async () => {
      async function* broken(): AsyncGenerator<Buffer> {
        yield Buffer.alloc(4096, 1);
        await Promise.resolve();
        throw new Error("connection reset");
      }
      await expect(store.put(broken())).rejects.toThrow("connection reset");
      expect(await filesUnder(root)).toEqual([]);
    });

    it("survives 20 concurrent puts of the same content, from two store instances", async () => {
      const other = new BlobStore(root);
      const data = randomBytes(256 * 1024);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? other : store).put(Readable.from([data.subarray(0, 1000), data.subarray(1000)])),
        ),
      );
      for (const r of results) expect(r).toMatchObject({ sha256: sha(data), size: data.length });
      expect(results.filter((r) => !r.existed).length).toBeGreaterThanOrEqual(1);
      expect(await collect(store.list())).toEqual([sha(data)]);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
      expect(sha256sum(store.path(sha(data)))).toBe(sha(data));
    });

    it("survives 20 concurrent puts of different content", async () => {
      const datas = Array.from({ length: 20 }, () =>
        randomBytes(64 * 1024 + Math.floor(Math.random() * 1000)),
      );
      const results = await Promise.all(datas.map((d) => store.putBuffer(d)));
      expect(results.map((r) => r.sha256)).toEqual(datas.map((d) => sha(d)));
      expect(results.every((r) => !r.existed)).toBe(true);
      expect(await collect(store.list())).toEqual(datas.map((d) => sha(d)).sort());
      for (const d of datas) expect((await readFile(store.path(sha(d)))).equals(d)).toBe(true);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
    });

    it("replaces a stored blob of the wrong size (damaged) with the fresh copy", async () => {
      const data = Buffer.from("intact content");
      const { sha256 } = await store.putBuffer(data);
      await chmod(store.path(sha256), 0o644);
      await writeFile(store.path(sha256), "trunc");
      expect(await store.verify(sha256)).toBe(false);

      const again = await store.putBuffer(data);
      expect(again.existed).toBe(false);
      expect(await store.verify(sha256)).toBe(true);
    });
  });

  describe("adoptFile", () => {
    it("stores a file by hard link: same inode, read-only, young, nothing left in tmp", async () => {
      const src = path.join(tmp.dir, "upload.deb");
      const data = randomBytes(300 * 1024 + 5);
      await writeFile(src, data);
      const old = new Date(Date.now() - 3 * HOUR);
      await utimes(src, old, old);

      const r = await store.adoptFile(src, { expectSha256: sha(data) });

      expect(r).toEqual({ sha256: sha(data), size: data.length, existed: false });
      const [a, b] = await Promise.all([stat(src), stat(store.path(r.sha256))]);
      expect(b.ino).toBe(a.ino);
      expect(b.nlink).toBe(2);
      expect(b.mode & 0o777).toBe(0o444);
      // The collector's age counts from now, not from the upload.
      expect(Date.now() - b.mtimeMs).toBeLessThan(HOUR);
      expect(sha256sum(store.path(r.sha256))).toBe(r.sha256);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
      // The upload going away leaves the blob.
      await rm(src);
      expect(await readFile(store.path(r.sha256))).toEqual(data);
    });

    it("says content it has already is there, and keeps the stored copy", async () => {
      const data = Buffer.from("the same bytes twice");
      const first = await store.putBuffer(data);
      const src = path.join(tmp.dir, "again.deb");
      await writeFile(src, data);
      const r = await store.adoptFile(src);
      expect(r).toEqual({ ...first, existed: true });
      expect((await stat(store.path(r.sha256))).ino).not.toBe((await stat(src)).ino);
    });

    it("refuses a file that is not what the caller read, storing nothing", async () => {
      const src = path.join(tmp.dir, "swapped.deb");
      await writeFile(src, "replaced after it was read");
      const claimed = sha("what was read");
      const err = await expectKilnError(store.adoptFile(src, { expectSha256: claimed }), "VALIDATION_FAILED");
      expect(err.details).toEqual({ expected: claimed, actual: sha("replaced after it was read") });
      expect(await filesUnder(root)).toEqual([]);
      expect((await stat(src)).nlink).toBe(1);
      await expectKilnError(store.adoptFile(src, { maxBytes: 5 }), "PAYLOAD_TOO_LARGE");
      expect(await filesUnder(root)).toEqual([]);
    });

    it("says a missing file is missing, and copies where a link cannot be made", async () => {
      await expect(store.adoptFile(path.join(tmp.dir, "nope.deb"))).rejects.toMatchObject({ code: "ENOENT" });
      // A symlink is not linked (the blob would be the link): its content is copied, as is a
      // file where link() answers EXDEV.
      await expectCopiedWhereNoLink((f) => store.adoptFile(f));
    });
  });

  describe("adoptInspected", () => {
    const inspectBy = (seen: string[]) => async (file: string) => {
      seen.push(file);
      const data = await readFile(file);
      return { sha256: sha(data), size: data.length, text: data.toString() };
    };

    it("hands the caller the linked inode to read once, and stores that inode", async () => {
      const src = path.join(tmp.dir, "pkg.deb");
      await writeFile(src, "package bytes");
      const seen: string[] = [];
      const { stored, inspected } = await store.adoptInspected(src, inspectBy(seen));
      expect(inspected.text).toBe("package bytes");
      expect(stored).toEqual({ sha256: sha("package bytes"), size: 13, existed: false });
      expect(seen).toHaveLength(1);
      expect(path.dirname(seen[0] as string)).toBe(path.join(root, "tmp"));
      const blob = await stat(store.path(stored.sha256));
      expect(blob.ino).toBe((await stat(src)).ino);
      expect(blob.mode & 0o777).toBe(0o444);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
    });

    it("stores nothing when the caller's reading fails", async () => {
      const src = path.join(tmp.dir, "bad.deb");
      await writeFile(src, "not a package");
      await expect(
        store.adoptInspected(src, () => Promise.reject(new Error("DEB_INVALID here"))),
      ).rejects.toThrow("DEB_INVALID here");
      expect(await filesUnder(root)).toEqual([]);
      expect((await stat(src)).nlink).toBe(1);
    });

    it("reads and copies a symlink's content, or a file on another file system", async () => {
      const seen: string[] = [];
      await expectCopiedWhereNoLink(async (f) => (await store.adoptInspected(f, inspectBy(seen))).stored);
      // Read where they are, not through a link.
      expect(seen[0]).toBe(path.join(tmp.dir, "link.deb"));
      for (const other of seen.slice(1)) expect(other).toMatch(/^\/dev\/shm\//);
    });
  });

  describe("deferred sync", () => {
    it("adopts a batch without fsyncs of its own and makes it durable in one flush", async () => {
      const batch = store.deferredSync();
      // Enough blobs for one sync of the file system (fewer are fsynced one by one).
      const datas = Array.from({ length: 70 }, (_, i) => Buffer.from(`package ${i}\n`.repeat(i + 1)));
      const results = await Promise.all(
        datas.map(async (d, i) => {
          const src = path.join(tmp.dir, `p${i}.deb`);
          await writeFile(src, d);
          return store.adoptFile(src, { expectSha256: sha(d), deferSync: batch });
        }),
      );
      // Complete and in place before the flush (only durability waits for it).
      for (const [i, r] of results.entries()) expect(await readFile(store.path(r.sha256))).toEqual(datas[i]);
      await batch.flush();
      await batch.flush(); // nothing left: a no-op
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
    });

    it("fsyncs each blob and its directories for a few blobs, or where sync(1) is missing", async () => {
      const few = store.deferredSync();
      const lone = path.join(tmp.dir, "lone.deb");
      await writeFile(lone, "lone");
      await store.adoptFile(lone, { deferSync: few });
      await few.flush();

      const batch = store.deferredSync();
      for (let i = 0; i < 64; i++) {
        const f = path.join(tmp.dir, `many${i}.deb`);
        await writeFile(f, `many ${i}`);
        await store.adoptFile(f, { deferSync: batch });
      }
      const src = path.join(tmp.dir, "one.deb");
      await writeFile(src, "one");
      const r = await store.adoptFile(src, { deferSync: batch });
      // Already stored content is noted too: another batch may not have synced it yet.
      const again = path.join(tmp.dir, "again.deb");
      await writeFile(again, "one");
      expect((await store.adoptFile(again, { deferSync: batch })).existed).toBe(true);
      const saved = process.env.PATH;
      process.env.PATH = path.join(tmp.dir, "no-such-bin");
      try {
        await batch.flush();
      } finally {
        process.env.PATH = saved;
      }
      expect(await readFile(store.path(r.sha256), "utf8")).toBe("one");
    });
  });

  describe("reading", () => {
    it("opens, ranges and stats a blob", async () => {
      const data = Buffer.from("0123456789");
      const { sha256 } = await store.putBuffer(data);

      expect(await store.has(sha256)).toBe(true);
      expect(await store.stat(sha256)).toMatchObject({ size: 10 });
      const whole: Buffer[] = [];
      for await (const c of store.open(sha256)) whole.push(c as Buffer);
      expect(Buffer.concat(whole).toString()).toBe("0123456789");
      const part: Buffer[] = [];
      for await (const c of store.open(sha256, { start: 2, end: 4 })) part.push(c as Buffer);
      expect(Buffer.concat(part).toString()).toBe("234");
    });

    it("reports a missing blob as ARTIFACT_NOT_FOUND", async () => {
      const missing = sha("never stored");
      expect(await store.has(missing)).toBe(false);
      await expectKilnError(() => store.open(missing), "ARTIFACT_NOT_FOUND");
      await expectKilnError(store.stat(missing), "ARTIFACT_NOT_FOUND");
      await expectKilnError(store.verify(missing), "ARTIFACT_NOT_FOUND");
    });

    it("verify detects a corrupted blob of the same size", async () => {
      const { sha256 } = await store.putBuffer(Buffer.from("good bytes"));
      expect(await store.verify(sha256)).toBe(true);

      await chmod(store.path(sha256), 0o644); // blobs are stored read-only
      await writeFile(store.path(sha256), "evil bytes");
      expect(await store.verify(sha256)).toBe(false);
    });

    it("lists stored hashes and skips stray files", async () => {
      const hashes = await Promise.all(["a", "b", "c"].map(async (s) => (await store.putBuffer(s)).sha256));
      await writeFile(path.join(root, "sha256", "README"), "stray");
      const [first] = hashes;
      await writeFile(path.join(path.dirname(store.path(first!)), "notes.txt"), "stray");
      await mkdir(path.join(root, "sha256", "zz", "zz"), { recursive: true });
      await writeFile(path.join(root, "sha256", "zz", "zz", sha("x")), "misplaced");

      expect(await collect(store.list())).toEqual([...hashes].sort());
    });

    it("lists nothing in a store never written to", async () => {
      expect(await collect(new BlobStore(path.join(tmp.dir, "nowhere")).list())).toEqual([]);
    });

    it("removes a blob", async () => {
      const { sha256 } = await store.putBuffer("bye");
      expect(await store.remove(sha256)).toBe(true);
      expect(await store.has(sha256)).toBe(false);
      expect(await store.remove(sha256)).toBe(false);
    });
  });

  describe("names", () => {
    const bad = [
      "../../etc/passwd",
      "../../../../../../etc/passwd".padEnd(64, "a"),
      sha("x").toUpperCase(),
      sha("x").slice(0, 63),
      sha("x") + "0",
      `${sha("x")}\n`,
      "",
      `${sha("x").slice(0, 62)}/.`,
      "g".repeat(64),
    ];

    it.each(bad)("refuses %j everywhere with INVALID_NAME", async (name) => {
      await expectKilnError(() => store.path(name), "INVALID_NAME");
      await expectKilnError(() => store.open(name), "INVALID_NAME");
      await expectKilnError(store.has(name), "INVALID_NAME");
      await expectKilnError(store.stat(name), "INVALID_NAME");
      await expectKilnError(store.verify(name), "INVALID_NAME");
      await expectKilnError(store.remove(name), "INVALID_NAME");
    });
  });

  describe("crash recovery", () => {
    it("cleanTemp removes temp files a crash left behind", async () => {
      await store.putBuffer("something");
      await mkdir(path.join(root, "tmp"), { recursive: true });
      await writeFile(path.join(root, "tmp", "0123abcd.part"), "half a blob");

      expect(await new BlobStore(root).cleanTemp()).toBe(1);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual([]);
      expect(await collect(store.list())).toEqual([sha("something")]);
    });

    it("cleanTemp on a fresh store does nothing", async () => {
      expect(await store.cleanTemp()).toBe(0);
    });

    it("cleanTemp leaves this instance's uploads in flight alone; minAgeMs spares other writers", async () => {
      const { source, release, started } = gatedSource([Buffer.from("part one, "), Buffer.from("part two")]);
      const pending = store.put(source);
      await started;
      expect(await filesUnder(path.join(root, "tmp"))).toHaveLength(1);

      expect(await store.cleanTemp()).toBe(0);
      expect(await new BlobStore(root).cleanTemp({ minAgeMs: HOUR })).toBe(0);
      expect(await filesUnder(path.join(root, "tmp"))).toHaveLength(1);

      release();
      const r = await pending;
      expect(r.sha256).toBe(sha("part one, part two"));
      expect(await store.verify(r.sha256)).toBe(true);
    });
  });

  describe("collectGarbage", () => {
    it("removes only unreferenced blobs older than minAgeMs", async () => {
      const refOld = await store.putBuffer("referenced, old");
      const unrefOld = await store.putBuffer("unreferenced, old");
      const unrefYoung = await store.putBuffer("unreferenced, young");
      await age(store.path(refOld.sha256), 2 * HOUR);
      await age(store.path(unrefOld.sha256), 2 * HOUR);
      const referenced = new Set([refOld.sha256]);
      const asked: string[] = [];

      const r = await store.collectGarbage(
        async (h) => {
          asked.push(h);
          await Promise.resolve();
          return referenced.has(h);
        },
        { minAgeMs: HOUR },
      );

      expect(r).toEqual({ removed: [unrefOld.sha256], kept: 2, bytesFreed: unrefOld.size, tempRemoved: 0 });
      expect(await collect(store.list())).toEqual([refOld.sha256, unrefYoung.sha256].sort());
      // Young blobs are kept without asking.
      expect(asked).not.toContain(unrefYoung.sha256);
    });

    it("defaults minAgeMs to an hour", async () => {
      const a = await store.putBuffer("fifty minutes");
      const b = await store.putBuffer("seventy minutes");
      await age(store.path(a.sha256), 50 * 60 * 1000);
      await age(store.path(b.sha256), 70 * 60 * 1000);
      const r = await store.collectGarbage(() => false);
      expect(r.removed).toEqual([b.sha256]);
      expect(await store.has(a.sha256)).toBe(true);
    });

    it("dryRun reports without removing", async () => {
      const a = await store.putBuffer("old garbage");
      await age(store.path(a.sha256), 2 * HOUR);
      await mkdir(path.join(root, "tmp"), { recursive: true });
      await writeFile(path.join(root, "tmp", "stale.part"), "xx");
      await age(path.join(root, "tmp", "stale.part"), 2 * HOUR);

      const r = await store.collectGarbage(() => false, { minAgeMs: HOUR, dryRun: true });
      expect(r).toEqual({ removed: [a.sha256], kept: 0, bytesFreed: a.size + 2, tempRemoved: 1 });
      expect(await store.has(a.sha256)).toBe(true);
      expect(await filesUnder(path.join(root, "tmp"))).toEqual(["stale.part"]);
    });

    it("removes stale temp files but not fresh ones", async () => {
      await mkdir(path.join(root, "tmp"), { recursive: true });
      await writeFile(path.join(root, "tmp", "stale.part"), "abc");
      await writeFile(path.join(root, "tmp", "fresh.part"), "abcd");
      await age(path.join(root, "tmp", "stale.part"), 2 * HOUR);

      const r = await store.collectGarbage(() => false, { minAgeMs: HOUR });
      expect(r).toEqual({ removed: [], kept: 0, bytesFreed: 3, tempRemoved: 1 });
      expect(await filesUnder(path.join(root, "tmp"))).toEqual(["fresh.part"]);
    });

    it("keeps an old blob that was just stored again (its reference may not be recorded yet)", async () => {
      const a = await store.putBuffer("popular content");
      await age(store.path(a.sha256), 2 * HOUR);
      expect((await store.putBuffer("popular content")).existed).toBe(true);

      const r = await store.collectGarbage(() => false, { minAgeMs: HOUR });
      expect(r.removed).toEqual([]);
      expect(await store.has(a.sha256)).toBe(true);
    });

    it("keeps a blob re-stored while the predicate was deciding", async () => {
      const a = await store.putBuffer("raced content");
      await age(store.path(a.sha256), 2 * HOUR);

      const r = await store.collectGarbage(
        async () => {
          await store.putBuffer("raced content"); // an upload lands mid-sweep
          return false;
        },
        { minAgeMs: HOUR },
      );
      expect(r).toMatchObject({ removed: [], kept: 1 });
      expect(await store.verify(a.sha256)).toBe(true);
    });
  });
});
