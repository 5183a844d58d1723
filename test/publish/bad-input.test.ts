/**
 * Hostile and broken input through `repo add` and publishing: each refused with its stable code,
 * with nothing stored (no package row, no blob, repo unchanged) and nothing served changed.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import { DIALECTS } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { GOOD_CONTROL, gzipZeros, makeDeb, makeTar, tarHeader } from "../debian/helpers.js";

const MB = 1024 * 1024;
const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");
const md5 = (data: Buffer | string) => createHash("md5").update(data).digest("hex");

/** Every file under `dir`, recursively (the blob store's contents). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.join(e.parentPath, e.name));
  }
  return out.sort();
}

const control = (fields: Record<string, string>) =>
  Object.entries({
    Package: "bad-kiln",
    Version: "1.0",
    Architecture: "amd64",
    Maintainer: "A <a@example.org>",
    Description: "bad input\n a package made to be refused",
    ...fields,
  })
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n") + "\n";

/** A small valid .dsc (3.0 native) naming one tarball, with what it lists. */
function makeDsc(tarball: Buffer, opts: { listedSha?: string } = {}): string {
  const name = "kiln-src_1.0.tar.gz";
  return [
    "Format: 3.0 (native)",
    "Source: kiln-src",
    "Binary: kiln-src",
    "Architecture: any",
    "Version: 1.0",
    "Maintainer: A <a@example.org>",
    "Checksums-Sha256:",
    ` ${opts.listedSha ?? sha256(tarball)} ${tarball.length} ${name}`,
    "Files:",
    ` ${md5(tarball)} ${tarball.length} ${name}`,
    "",
  ].join("\n");
}

/** A GET whose path goes out byte for byte, without the URL parser's dot-segment removal. */
function rawGet(url: string): Promise<number> {
  const u = new URL(url.replace(/\/apt\/.*$/, "/"));
  const rawPath = url.slice(url.indexOf("/apt/"));
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: rawPath, method: "GET" }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

let work: string;
let goodDeb: string;
let otherDeb: string;
let bomb: Buffer;
beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), "kiln-bad-"));
  goodDeb = buildDeb(work, { name: "good-kiln", version: "1.0" });
  const other = path.join(work, "other");
  mkdirSync(other);
  // Same name, version and arch as goodDeb, other content: the same pool file name.
  otherDeb = buildDeb(other, { name: "good-kiln", version: "1.0", payload: "something else" });
  // control.tar.gz: ./control, then a 200 MiB ./postinst of zeros: ~200 KiB compressed.
  bomb = await gzipZeros(
    200,
    Buffer.concat([
      makeTar([{ path: "./control", content: GOOD_CONTROL }], false),
      tarHeader({ path: "./postinst", size: 200 * MB }),
    ]),
  );
}, 120_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

for (const dialect of DIALECTS) {
  describe(`bad input to repo add and publish (${dialect})`, () => {
    let t: TestHub;
    let c: KilnClient;
    let liveRelease: Buffer;

    const served = async (p: string) => Buffer.from(await (await fetch(`${t.url}/apt/${p}`)).arrayBuffer());
    const packageRows = async () =>
      Number(
        (
          await t.hub.deps.db.kysely
            .selectFrom("packages")
            .select((eb) => eb.fn.countAll<number>().as("n"))
            .executeTakeFirstOrThrow()
        ).n,
      );
    const blobs = () => filesUnder(path.join(t.dataDir, "blobs")).filter((f) => !f.includes("tmp"));

    /** Adds `files` (name → bytes) in one upload; returns the one failed report. */
    async function addBad(files: Record<string, Buffer | string>, code: string) {
      const beforeRows = await packageRows();
      const beforeBlobs = blobs();
      const beforeRepo = await c.showRepo("bad", { withPackages: true });
      const { id } = await c.createUpload();
      for (const [name, data] of Object.entries(files)) await c.uploadFile(id, name, Buffer.from(data));
      const res = await c.addToRepo("bad", { upload: id });
      expect(res.task.state).toBe("closed");
      expect(res.result).toMatchObject({ added: 0, existing: 0, failed: 1 });
      const report = res.result?.files.find((f) => f.outcome === "failed");
      expect(report, JSON.stringify(res.result)).toMatchObject({ outcome: "failed", code });
      expect((report as { error: string }).error.length).toBeGreaterThan(10);
      // Nothing stored, nothing changed, nothing served changed.
      expect(await packageRows()).toBe(beforeRows);
      expect(blobs()).toEqual(beforeBlobs);
      expect(await c.showRepo("bad", { withPackages: true })).toEqual(beforeRepo);
      expect((await served("good/dists/stable/Release")).equals(liveRelease)).toBe(true);
      return report as { error: string };
    }

    beforeAll(async () => {
      t = await startTestHub(dialect);
      c = t.admin;
      await c.createRepo({ name: "bad" });
      const { id } = await c.createUpload();
      await c.uploadFile(id, path.basename(goodDeb), readFileSync(goodDeb));
      expect((await c.addToRepo("bad", { upload: id })).result?.added).toBe(1);
      await c.publish({
        prefix: "good",
        distribution: "stable",
        sourceKind: "local",
        sources: [{ component: "main", name: "bad" }],
      });
      liveRelease = await served("good/dists/stable/Release");
      expect(liveRelease.toString()).toMatch(/^Suite: stable$/m);
    });
    afterAll(async () => {
      await t?.cleanup();
    });

    it("a truncated .deb", async () => {
      const deb = readFileSync(buildDeb(work, { name: "cut-kiln", version: "1.0" }));
      const r = await addBad({ "cut-kiln_1.0_amd64.deb": deb.subarray(0, deb.length >> 1) }, "DEB_INVALID");
      expect(r.error).toMatch(/truncated/);
    });

    it("a wrong ar magic", async () => {
      const deb = makeDeb();
      deb.write("!<arcX>\n", 0, "latin1");
      const r = await addBad({ "magic_1.0-1_amd64.deb": deb }, "DEB_INVALID");
      expect(r.error).toMatch(/not an ar archive/);
    });

    it.each([
      ["a ../ path", "./../postinst"],
      ["an absolute path", "/etc/cron.d/evil"],
    ])("a control archive holding %s", async (_what, evil) => {
      const deb = makeDeb({
        control: [
          { path: "./control", content: GOOD_CONTROL },
          { path: evil, content: "rm -rf /" },
        ],
      });
      await addBad({ "evil_1.0-1_amd64.deb": deb }, "ARCHIVE_UNSAFE");
    });

    it("a huge control file", async () => {
      const huge = `${GOOD_CONTROL} ${"x".repeat(2 * MB)}\n`;
      const r = await addBad(
        { "huge_1.0-1_amd64.deb": makeDeb({ control: [{ path: "./control", content: huge }] }) },
        "ARCHIVE_TOO_LARGE",
      );
      expect(r.error).toMatch(/limit/);
    });

    it("a decompression bomb in control.tar.gz", async () => {
      expect(bomb.length).toBeLessThan(2 * MB);
      await addBad(
        { "bomb_1.0-1_amd64.deb": makeDeb({ controlMember: { name: "control.tar.gz", data: bomb } }) },
        "ARCHIVE_TOO_LARGE",
      );
      // A control.tar.gz of nothing but zeros: no control file in it.
      const zeros = await gzipZeros(64);
      await addBad(
        { "zeros_1.0-1_amd64.deb": makeDeb({ controlMember: { name: "control.tar.gz", data: zeros } }) },
        "DEB_INVALID",
      );
    });

    it.each([
      ["an upper-case name", { Package: "Bad_Name" }, "INVALID_PACKAGE_NAME"],
      ["a name with a slash", { Package: "../../etc" }, "INVALID_PACKAGE_NAME"],
      ["a version not starting with a digit", { Version: "v1.0" }, "INVALID_VERSION"],
      ["a version with a space", { Version: "1.0 2" }, "INVALID_VERSION"],
      ["an architecture with a slash", { Architecture: "../amd64" }, "INVALID_ARCHITECTURE"],
    ])("a package with %s", async (_what, fields, code) => {
      const deb = makeDeb({ control: [{ path: "./control", content: control(fields) }] });
      await addBad({ "bad-kiln_1.0_amd64.deb": deb }, code);
    });

    it("a .dsc whose file is missing or has a wrong checksum", async () => {
      const tarball = zlib.gzipSync(makeTar([{ path: "kiln-src-1.0/README", content: "hi\n" }]));
      await addBad({ "kiln-src_1.0.dsc": makeDsc(tarball) }, "DSC_FILE_MISSING");
      await addBad(
        {
          "kiln-src_1.0.dsc": makeDsc(tarball, { listedSha: sha256("other") }),
          "kiln-src_1.0.tar.gz": tarball,
        },
        "CHECKSUM_MISMATCH",
      );
      const shorter = tarball.subarray(0, tarball.length - 1);
      await addBad(
        { "kiln-src_1.0.dsc": makeDsc(tarball), "kiln-src_1.0.tar.gz": shorter },
        "CHECKSUM_MISMATCH",
      );
      // The control: the same .dsc with its file is taken.
      const { id } = await c.createUpload();
      await c.uploadFile(id, "kiln-src_1.0.dsc", Buffer.from(makeDsc(tarball)));
      await c.uploadFile(id, "kiln-src_1.0.tar.gz", tarball);
      const ok = await c.addToRepo("bad", { upload: id });
      expect(ok.result).toMatchObject({ added: 1, failed: 0 });
      await c.removeFromRepo("bad", "$PackageType (source)");
    });

    it("prefixes and distributions with path tricks", async () => {
      const spec = (prefix: string, distribution: string) => ({
        prefix,
        distribution,
        sourceKind: "local" as const,
        sources: [{ component: "main", name: "bad" }],
      });
      const publicBefore = filesUnder(path.join(t.dataDir, "public"));
      for (const prefix of ["..", "../x", "a/../b", "/abs", "a//b", "a/", "%2e%2e", "good/dists", "x/pool"]) {
        await expect(c.publish(spec(prefix, "stable")), prefix).rejects.toMatchObject({
          code: "INVALID_PREFIX",
        });
      }
      for (const dist of ["..", ".", "a/b", "../../etc", "%2e%2e", "", ".hidden"]) {
        await expect(c.publish(spec("good", dist)), dist).rejects.toMatchObject({
          code: expect.stringMatching(/^(INVALID_NAME|VALIDATION_FAILED)$/) as unknown,
        });
      }
      // The same tricks in the URL of an existing publication's actions.
      for (const dist of ["..", "%2e%2e", "../stable", "stable/../stable"]) {
        await expect(c.publicationAction("good", dist, "update"), dist).rejects.toMatchObject({
          code: expect.stringMatching(/^(INVALID_NAME|PUBLICATION_NOT_FOUND|NOT_FOUND)$/) as unknown,
        });
      }
      await expect(c.publicationAction("good/..", "stable", "update")).rejects.toMatchObject({
        code: "INVALID_PREFIX",
      });
      // And in /apt/ paths, sent as they are (fetch would resolve %2e%2e itself): refused.
      for (const p of [
        "good/%2e%2e/good/dists/stable/Release",
        "good/../good/dists/stable/Release",
        "good/dists/stable/..%2fRelease",
        "%2e%2e/kiln.db",
        "good/dists/%2e%2e/%2e%2e/%2e%2e/kiln.db",
      ]) {
        const status = await rawGet(`${t.url}/apt/${p}`);
        expect(status, p).toBeGreaterThanOrEqual(400);
        expect(status, p).toBeLessThan(500);
      }
      expect(filesUnder(path.join(t.dataDir, "public"))).toEqual(publicBefore);
      expect((await served("good/dists/stable/Release")).equals(liveRelease)).toBe(true);
      expect((await c.listPublications()).map((p) => `${p.prefix}/${p.distribution}`)).toEqual([
        "good/stable",
      ]);
    });

    it("another file under the same pool name at the same prefix: POOL_FILE_CONFLICT, live one intact", async () => {
      await c.createRepo({ name: "other" });
      const { id } = await c.createUpload();
      await c.uploadFile(id, path.basename(otherDeb), readFileSync(otherDeb));
      expect((await c.addToRepo("other", { upload: id })).result?.added).toBe(1);
      const poolPath = "good/pool/main/g/good-kiln/good-kiln_1.0_amd64.deb";
      const poolBefore = await served(poolPath);
      expect(sha256(poolBefore)).toBe(sha256(readFileSync(goodDeb)));
      const inReleaseBefore = await served("good/dists/stable/InRelease");

      await expect(
        c.publish({
          prefix: "good",
          distribution: "testing",
          sourceKind: "local",
          sources: [{ component: "main", name: "other" }],
        }),
      ).rejects.toMatchObject({ code: "POOL_FILE_CONFLICT" });
      // Nothing of the refused publication stays; the live one serves what it did, byte for byte.
      expect((await fetch(`${t.url}/apt/good/dists/testing/Release`)).status).toBe(404);
      expect((await c.listPublications()).map((p) => p.distribution)).toEqual(["stable"]);
      expect((await served("good/dists/stable/Release")).equals(liveRelease)).toBe(true);
      expect((await served("good/dists/stable/InRelease")).equals(inReleaseBefore)).toBe(true);
      expect((await served(poolPath)).equals(poolBefore)).toBe(true);

      // Updating the live publication after its repo took the other file is refused the same way.
      await c.removeFromRepo("bad", "good-kiln");
      const { id: id2 } = await c.createUpload();
      await c.uploadFile(id2, path.basename(otherDeb), readFileSync(otherDeb));
      expect((await c.addToRepo("bad", { upload: id2 })).result?.added).toBe(1);
      const live = (await c.showPublication("good", "stable")).liveGeneration;
      await expect(c.publicationAction("good", "stable", "update")).rejects.toMatchObject({
        code: "POOL_FILE_CONFLICT",
      });
      const shown = await c.showPublication("good", "stable");
      expect(shown.liveGeneration).toBe(live);
      expect(shown.history?.[0]).toMatchObject({ state: "failed" });
      expect((await served("good/dists/stable/Release")).equals(liveRelease)).toBe(true);
      expect((await served(poolPath)).equals(poolBefore)).toBe(true);
    });
  });
}
