import { randomBytes } from "node:crypto";
import { mkdir, readFile, stat, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UploadAreas } from "../../src/artifacts/upload-area.js";
import {
  endlessSource,
  expectKilnError,
  filesUnder,
  gatedSource,
  makeTempDir,
  sha256sum,
} from "./helpers.js";

const HOUR = 60 * 60 * 1000;

async function age(p: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(p, t, t);
}

describe("UploadAreas", () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let root: string;
  let areas: UploadAreas;

  beforeEach(async () => {
    tmp = await makeTempDir();
    root = path.join(tmp.dir, "upload");
    areas = new UploadAreas(root);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  describe("areas", () => {
    it("gives every upload a fresh directory of its own", async () => {
      const created = await Promise.all(Array.from({ length: 50 }, () => areas.create()));
      const ids = created.map((a) => a.id);
      expect(new Set(ids).size).toBe(50);
      for (const a of created) {
        expect(a.id).toMatch(/^u-\d+-[0-9a-f]{12}$/);
        expect(a.dir).toBe(path.join(root, a.id));
        expect((await stat(a.dir)).isDirectory()).toBe(true);
      }
      expect(await areas.areas()).toEqual([...ids].sort());
    });

    it("takes a prefix", async () => {
      const a = await areas.create("build-42");
      expect(a.id).toMatch(/^build-42-\d+-[0-9a-f]{12}$/);
      await expectKilnError(areas.create("../x"), "INVALID_NAME");
      await expectKilnError(areas.create("a".repeat(65)), "INVALID_NAME");
      expect(await areas.areas()).toEqual([a.id]);
    });

    it("ensure() opens or creates a caller-named area, as Aptly's /api/files/:dir does", async () => {
      const first = await areas.ensure("my-upload_1.0");
      expect(first).toEqual({ id: "my-upload_1.0", dir: path.join(root, "my-upload_1.0"), created: true });
      await areas.writeFile("my-upload_1.0", "a.deb", Readable.from([Buffer.from("a")]));
      const again = await areas.ensure("my-upload_1.0");
      expect(again.created).toBe(false);
      expect(await areas.list("my-upload_1.0")).toEqual([{ name: "a.deb", size: 1 }]);
    });

    it.each([".", "..", "../etc", "a/b", "", "a".repeat(129), "a b", "a\0b", "über"])(
      "refuses the area name %j",
      async (bad) => {
        await expectKilnError(areas.ensure(bad), "INVALID_NAME");
        await expectKilnError(areas.writeFile(bad, "f", Readable.from([Buffer.from("x")])), "INVALID_NAME");
        await expectKilnError(areas.list(bad), "INVALID_NAME");
        await expectKilnError(areas.remove(bad), "INVALID_NAME");
        await expectKilnError(() => areas.filePath(bad, "f"), "INVALID_NAME");
        expect(await filesUnder(tmp.dir)).toEqual([]);
      },
    );

    it("accepts the longest allowed area name", async () => {
      const name = "A".repeat(128);
      expect((await areas.ensure(name)).created).toBe(true);
    });

    it("refuses a caller name taken by something other than a directory", async () => {
      await mkdir(root, { recursive: true });
      await symlink("/etc", path.join(root, "sneaky"));
      await expectKilnError(areas.ensure("sneaky"), "INVALID_NAME");
      await expectKilnError(areas.writeFile("sneaky", "passwd", Readable.from(["x"])), "UPLOAD_NOT_FOUND");
    });
  });

  describe("files", () => {
    it("writes a file, with the hash and size sha256sum sees", async () => {
      const { id } = await areas.create();
      const data = randomBytes(2 * 1024 * 1024 + 5);
      const r = await areas.writeFile(id, "hello_1.0_amd64.deb", Readable.from([data]), {
        maxBytes: 10_000_000,
      });

      const file = areas.filePath(id, "hello_1.0_amd64.deb");
      expect(file).toBe(path.join(root, id, "hello_1.0_amd64.deb"));
      expect(r).toEqual({ name: "hello_1.0_amd64.deb", size: data.length, sha256: sha256sum(file) });
      expect((await readFile(file)).equals(data)).toBe(true);
      expect(await areas.list(id)).toEqual([{ name: "hello_1.0_amd64.deb", size: data.length }]);
    });

    it("keeps two uploads of the same file names apart", async () => {
      const a = await areas.create();
      const b = await areas.create();
      await Promise.all([
        areas.writeFile(a.id, "pkg.dsc", Readable.from(["from a"])),
        areas.writeFile(b.id, "pkg.dsc", Readable.from(["from b"])),
      ]);
      expect(await areas.remove(a.id)).toBe(true);
      expect(await areas.exists(a.id)).toBe(false);
      expect(await readFile(areas.filePath(b.id, "pkg.dsc"), "utf8")).toBe("from b");
      expect(await areas.remove(a.id)).toBe(false);
    });

    it("replaces a file of the same name", async () => {
      const { id } = await areas.create();
      await areas.writeFile(id, "f", Readable.from(["one"]));
      await areas.writeFile(id, "f", Readable.from(["two!"]));
      expect(await areas.list(id)).toEqual([{ name: "f", size: 4 }]);
    });

    const badNames = [
      "a/b",
      "/etc/passwd",
      "../x",
      "..",
      ".",
      "",
      "a\0b",
      "line\nbreak",
      "back\\slash",
      "é".repeat(128), // 256 bytes
      "a".repeat(256),
      ".kiln-part-0123",
    ];
    it.each(badNames)("refuses the file name %j and writes nothing", async (bad) => {
      const { id } = await areas.create();
      const { source, state } = endlessSource(1024);
      await expectKilnError(areas.writeFile(id, bad, source), "INVALID_NAME");
      expect(state.sent).toBe(0);
      await expectKilnError(() => areas.filePath(id, bad), "INVALID_NAME");
      await expectKilnError(areas.removeFile(id, bad), "INVALID_NAME");
      expect(await filesUnder(root)).toEqual([]);
    });

    it("accepts a 255-byte name and ordinary Debian file names", async () => {
      const { id } = await areas.create();
      for (const name of [
        "a".repeat(255),
        "é".repeat(127) + "x",
        "foo_1:2.0~rc1+dfsg-1_amd64.deb",
        ".hidden",
      ]) {
        await areas.writeFile(id, name, Readable.from(["x"]));
      }
      expect((await areas.list(id)).length).toBe(4);
    });

    it("refuses an oversized write and leaves nothing behind", async () => {
      const { id } = await areas.create();
      const { source, state } = endlessSource(64 * 1024);
      const err = await expectKilnError(
        areas.writeFile(id, "big.deb", source, { maxBytes: 1024 * 1024 }),
        "PAYLOAD_TOO_LARGE",
      );
      expect(err.details).toEqual({ maxBytes: 1024 * 1024 });
      expect(state.finished).toBe(true);
      expect(await filesUnder(root)).toEqual([]);
    });

    it("leaves the previous file intact when its replacement is refused", async () => {
      const { id } = await areas.create();
      await areas.writeFile(id, "f.deb", Readable.from(["old content"]));
      await expectKilnError(
        areas.writeFile(id, "f.deb", Readable.from([Buffer.alloc(100)]), { maxBytes: 50 }),
        "PAYLOAD_TOO_LARGE",
      );
      expect(await filesUnder(root)).toEqual([path.join(id, "f.deb")]);
      expect(await readFile(areas.filePath(id, "f.deb"), "utf8")).toBe("old content");
    });

    it("makes an area's files durable on request (a build's source), leaving them as they are", async () => {
      const { id } = await areas.create();
      await areas.writeFile(id, "hello_1.0.tar.xz", Readable.from(["source"]));
      await areas.writeFile(id, "hello_1.0.dsc", Readable.from(["dsc"]));
      await areas.sync(id);
      expect(await areas.list(id)).toEqual([
        { name: "hello_1.0.dsc", size: 3 },
        { name: "hello_1.0.tar.xz", size: 6 },
      ]);
      expect(await readFile(areas.filePath(id, "hello_1.0.tar.xz"), "utf8")).toBe("source");
    });

    it("reports a missing area as UPLOAD_NOT_FOUND and does not create it", async () => {
      await expectKilnError(areas.writeFile("nope", "f", Readable.from(["x"])), "UPLOAD_NOT_FOUND");
      await expectKilnError(areas.list("nope"), "UPLOAD_NOT_FOUND");
      await expectKilnError(areas.sync("nope"), "UPLOAD_NOT_FOUND");
      expect(await areas.exists("nope")).toBe(false);
      expect(await filesUnder(tmp.dir)).toEqual([]);
    });

    it("reports an area removed during a write as UPLOAD_NOT_FOUND", async () => {
      const { id } = await areas.create();
      const { source, release, started } = gatedSource([Buffer.from("partial")]);
      const pending = areas.writeFile(id, "f", source);
      await started;
      await areas.remove(id);
      release();
      await expectKilnError(pending, "UPLOAD_NOT_FOUND");
      expect(await areas.areas()).toEqual([]);
    });

    it("hides files still being written", async () => {
      const { id } = await areas.create();
      await areas.writeFile(id, "done", Readable.from(["x"]));
      const { source, release, started } = gatedSource([Buffer.from("partial")]);
      const pending = areas.writeFile(id, "later", source);
      await started;
      expect(await areas.list(id)).toEqual([{ name: "done", size: 1 }]);
      release();
      await pending;
      expect((await areas.list(id)).map((f) => f.name)).toEqual(["done", "later"]);
    });

    it("removes a single file", async () => {
      const { id } = await areas.create();
      await areas.writeFile(id, "f", Readable.from(["x"]));
      expect(await areas.removeFile(id, "f")).toBe(true);
      expect(await areas.removeFile(id, "f")).toBe(false);
      expect(await areas.list(id)).toEqual([]);
    });
  });

  describe("removeOlderThan", () => {
    it("removes abandoned areas and keeps active ones", async () => {
      const old = await areas.create();
      await areas.writeFile(old.id, "f", Readable.from(["x"]));
      await age(areas.filePath(old.id, "f"), 2 * HOUR);
      await age(old.dir, 2 * HOUR);

      const fresh = await areas.create();

      // Old directory, but a file written into it recently: still in use.
      const touched = await areas.create();
      await age(touched.dir, 2 * HOUR);
      await writeFile(path.join(touched.dir, "recent"), "x");
      await age(touched.dir, 2 * HOUR);

      expect(await areas.removeOlderThan(HOUR)).toEqual([old.id]);
      expect((await areas.areas()).sort()).toEqual([fresh.id, touched.id].sort());
    });

    it("keeps an area this instance is writing into", async () => {
      const { id, dir } = await areas.create();
      const { source, release, started } = gatedSource([Buffer.from("slow")]);
      const pending = areas.writeFile(id, "slow.deb", source);
      await started;
      await age(dir, 2 * HOUR);
      for (const f of await filesUnder(dir)) await age(path.join(dir, f), 2 * HOUR);

      expect(await areas.removeOlderThan(HOUR)).toEqual([]);
      release();
      expect((await pending).size).toBe(4);
      expect(await areas.removeOlderThan(0)).toEqual([id]);
    });

    it("does nothing when there is no upload directory yet", async () => {
      expect(await areas.removeOlderThan(0)).toEqual([]);
    });
  });
});
