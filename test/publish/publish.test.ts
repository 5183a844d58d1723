import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AptClient } from "../helpers/apt.js";
import { DIALECTS } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import type { KilnClient } from "../../src/client/client.js";

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

async function upload(client: KilnClient, files: string[]): Promise<string> {
  const { id } = await client.createUpload();
  for (const f of files) await client.uploadFile(id, path.basename(f), readFileSync(f));
  return id;
}

for (const dialect of DIALECTS) {
  describe(`publishing a local repo (${dialect})`, () => {
    let t: TestHub;
    let work: string;
    let keyring: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-pub-"));
      const armored = await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text();
      keyring = path.join(work, "keyring.gpg");
      execFileSync("gpg", ["--dearmor", "-o", keyring], { input: armored });
    });
    afterAll(async () => {
      await t?.cleanup();
      rmSync(work, { recursive: true, force: true });
    });

    it("adds packages, publishes signed, and apt installs from it; rollback restores the old Release", async () => {
      const c = t.admin;
      await c.createRepo({ name: "main-repo", comment: "tests" });
      const v1 = buildDeb(work, { name: "hello-kiln", version: "1.0-1" });
      const lib = buildDeb(work, { name: "libkiln1", version: "2.0-1", source: "kiln-lib" });
      const doc = buildDeb(work, { name: "kiln-doc", version: "1.0", arch: "all" });
      const added = await c.addToRepo("main-repo", { upload: await upload(c, [v1, lib, doc]) });
      expect(added.result?.added).toBe(3);
      expect(added.result?.files.map((f) => f.outcome)).toEqual(["added", "added", "added"]);

      // The same file again: reported as already there; different content under the same
      // name/version/arch: refused, nothing changed.
      const again = await c.addToRepo("main-repo", { upload: await upload(c, [v1]) });
      expect(again.result?.files[0]?.outcome).toBe("exists");
      const other = path.join(work, "other");
      execFileSync("mkdir", ["-p", other]);
      const v1b = buildDeb(other, { name: "hello-kiln", version: "1.0-1", payload: "different" });
      const conflict = await c.addToRepo("main-repo", { upload: await upload(c, [v1b]) });
      expect(conflict.result?.files[0]).toMatchObject({ outcome: "failed", code: "PACKAGE_CONFLICT" });
      expect((await c.showRepo("main-repo")).packageCount).toBe(3);

      const pub = await c.publish({
        prefix: ".",
        distribution: "stable",
        sourceKind: "local",
        sources: [{ component: "main", name: "main-repo" }],
      });
      expect(pub.result).toMatchObject({ generation: 1, packageCount: 3 });

      // The Release is signed by the served key: gpgv checks both signatures.
      const release = Buffer.from(await (await fetch(`${t.url}/apt/dists/stable/Release`)).arrayBuffer());
      expect(sha256(release)).toBe(pub.result?.releaseSha256);
      writeFileSync(path.join(work, "Release"), release);
      writeFileSync(
        path.join(work, "Release.gpg"),
        Buffer.from(await (await fetch(`${t.url}/apt/dists/stable/Release.gpg`)).arrayBuffer()),
      );
      writeFileSync(
        path.join(work, "InRelease"),
        Buffer.from(await (await fetch(`${t.url}/apt/dists/stable/InRelease`)).arrayBuffer()),
      );
      execFileSync(
        "gpgv",
        ["--keyring", keyring, path.join(work, "Release.gpg"), path.join(work, "Release")],
        { stdio: "pipe" },
      );
      execFileSync("gpgv", ["--keyring", keyring, path.join(work, "InRelease")], { stdio: "pipe" });

      const apt = new AptClient(`deb [signed-by=${keyring}] ${t.url}/apt stable main`);
      try {
        const up = await apt.update();
        expect(up.stderr).not.toMatch(/^(E|W):/m);
        expect(up.code).toBe(0);
        const dl = await apt.download("hello-kiln");
        expect(dl.stderr).toBe("");
        expect(dl.code).toBe(0);
        const got = readdirSync(dl.dir);
        expect(got).toContain("hello-kiln_1.0-1_amd64.deb");
        expect(sha256(readFileSync(path.join(dl.dir, "hello-kiln_1.0-1_amd64.deb")))).toBe(
          sha256(readFileSync(v1)),
        );
        expect((await apt.download("kiln-doc")).code).toBe(0);

        // Version 2, republished: apt sees it.
        const v2 = buildDeb(work, { name: "hello-kiln", version: "2.0-1" });
        await c.addToRepo("main-repo", { upload: await upload(c, [v2]) });
        const second = await c.publicationAction(".", "stable", "update");
        expect(second.result?.generation).toBe(2);
        expect((await apt.update()).code).toBe(0);
        const policy = await apt.run("download", "hello-kiln=2.0-1");
        expect(policy.stderr).toBe("");
        expect(policy.code).toBe(0);

        // Rollback: the first Release again, byte for byte, and apt no longer offers 2.0-1.
        const back = await c.publicationAction(".", "stable", "rollback");
        expect(back.result?.generation).toBe(1);
        const after = Buffer.from(await (await fetch(`${t.url}/apt/dists/stable/Release`)).arrayBuffer());
        expect(after.equals(release)).toBe(true);
        // (A client that already holds the newer lists keeps them: apt refuses a Release older
        // than the one it has, which is its protection against replays. A fresh one sees 1.0-1.)
        const fresh = new AptClient(`deb [signed-by=${keyring}] ${t.url}/apt stable main`);
        try {
          expect((await fresh.update()).code).toBe(0);
          expect((await fresh.run("download", "hello-kiln=2.0-1")).code).not.toBe(0);
          expect((await fresh.run("download", "hello-kiln=1.0-1")).code).toBe(0);
        } finally {
          fresh.cleanup();
        }

        const shown = await c.showPublication(".", "stable");
        expect(shown.liveGeneration).toBe(1);
        expect(shown.history?.map((h) => [h.generation, h.state])).toEqual([
          [2, "retired"],
          [1, "live"],
        ]);
      } finally {
        apt.cleanup();
      }
    });

    it("a wrong key or a tampered index makes apt fail", async () => {
      const otherHome = mkdtempSync(path.join(os.tmpdir(), "kiln-gpg-"));
      try {
        execFileSync(
          "gpg",
          [
            "--homedir",
            otherHome,
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Other <o@example.org>",
            "ed25519",
            "sign",
            "never",
          ],
          { stdio: "pipe" },
        );
        const wrong = path.join(work, "wrong.gpg");
        execFileSync("gpg", ["--homedir", otherHome, "--export", "-o", wrong], { stdio: "pipe" });
        const apt = new AptClient(`deb [signed-by=${wrong}] ${t.url}/apt stable main`);
        try {
          const res = await apt.update();
          expect(`${res.stdout}${res.stderr}`).toMatch(
            /NO_PUBKEY|not signed|signatures couldn't be verified/,
          );
        } finally {
          apt.cleanup();
        }
      } finally {
        rmSync(otherHome, { recursive: true, force: true });
      }
    });

    it("refuses bad names, prefixes and queries with stable codes, changing nothing", async () => {
      const c = t.admin;
      await expect(c.createRepo({ name: "../evil" })).rejects.toMatchObject({ code: "INVALID_NAME" });
      await expect(c.createRepo({ name: "main-repo" })).rejects.toMatchObject({ code: "REPO_EXISTS" });
      await expect(
        c.publish({
          prefix: "../x",
          distribution: "stable",
          sourceKind: "local",
          sources: [{ component: "main", name: "main-repo" }],
        }),
      ).rejects.toMatchObject({ code: "INVALID_PREFIX" });
      await expect(
        c.publish({
          prefix: "x",
          distribution: "../../etc",
          sourceKind: "local",
          sources: [{ component: "main", name: "main-repo" }],
        }),
      ).rejects.toMatchObject({ code: "INVALID_NAME" });
      await expect(
        c.publish({
          prefix: ".",
          distribution: "stable",
          sourceKind: "local",
          sources: [{ component: "main", name: "main-repo" }],
        }),
      ).rejects.toMatchObject({ code: "PUBLICATION_EXISTS" });
      await expect(c.removeFromRepo("main-repo", "Name (>= ")).rejects.toMatchObject({
        code: "QUERY_INVALID",
      });
      await expect(c.dropRepo("main-repo")).rejects.toMatchObject({ code: "REPO_PUBLISHED" });
      const area = await upload(c, []);
      for (const name of ["../../kiln.db", "/etc/passwd", ".."]) {
        await expect(c.addToRepo("main-repo", { upload: area, files: [name] })).rejects.toMatchObject({
          code: "INVALID_NAME",
        });
      }
      expect((await c.showRepo("main-repo")).packageCount).toBe(4);
      const truncated = path.join(work, "truncated_1.0_amd64.deb");
      writeFileSync(
        truncated,
        readFileSync(buildDeb(work, { name: "truncated", version: "1.0" })).subarray(0, 300),
      );
      const bad = await c.addToRepo("main-repo", { upload: await upload(c, [truncated]) });
      expect(bad.result?.files[0]).toMatchObject({ outcome: "failed", code: "DEB_INVALID" });
      expect((await c.showRepo("main-repo")).packageCount).toBe(4);
    });
  });
}
