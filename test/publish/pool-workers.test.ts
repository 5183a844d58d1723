import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runPoolBatches, type PoolBatch } from "../../src/publish/pool-workers.js";

const root = mkdtempSync(path.join(os.tmpdir(), "kiln-pool-workers-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A fresh tree: three "blobs" to link from, and a pool to link into. */
function setUp(name: string) {
  const dir = path.join(root, name);
  const blobs = path.join(dir, "blobs");
  mkdirSync(blobs, { recursive: true });
  const blob = (n: number) => {
    const file = path.join(blobs, `b${n}`);
    writeFileSync(file, `blob ${n}\n`);
    return file;
  };
  return { pool: path.join(dir, "pool", "main"), blobs: [blob(0), blob(1), blob(2)] };
}

const ino = (file: string) => statSync(file).ino;

// Workers: 0 runs the batches in the hub's own thread, as small pools do.
for (const workers of [0, 1, 2]) {
  describe(`runPoolBatches with ${workers} worker thread(s)`, () => {
    it("makes the missing parents and directories, and links each file in", async () => {
      const { pool, blobs } = setUp(`make-${workers}`);
      mkdirSync(path.join(pool, "a", "already"), { recursive: true }); // made before: left as it is
      const batches: PoolBatch[] = [
        {
          parent: path.join(pool, "a"),
          dirs: ["already", "apple"],
          links: [
            [blobs[0] as string, path.join(pool, "a", "already", "already_1.deb")],
            [blobs[1] as string, path.join(pool, "a", "apple", "apple_1.deb")],
          ],
        },
        {
          parent: path.join(pool, "libb"), // missing, with its own parent: made
          dirs: ["libbanana"],
          links: [[blobs[2] as string, path.join(pool, "libb", "libbanana", "libbanana_1.deb")]],
        },
      ];
      const result = await runPoolBatches(batches, { workers });
      expect(result).toEqual({ linked: 3, clashes: [] });
      expect(readdirSync(path.join(pool, "a")).sort()).toEqual(["already", "apple"]);
      expect(ino(path.join(pool, "a", "apple", "apple_1.deb"))).toBe(ino(blobs[1] as string));
      expect(ino(path.join(pool, "libb", "libbanana", "libbanana_1.deb"))).toBe(ino(blobs[2] as string));
      // Run again: every name is there now, and each one is reported, not replaced.
      const again = await runPoolBatches(batches, { workers });
      expect(again.linked).toBe(0);
      expect(again.clashes.sort()).toEqual(batches.flatMap((b) => b.links.map(([, to]) => to)).sort());
      expect(ino(path.join(pool, "a", "apple", "apple_1.deb"))).toBe(ino(blobs[1] as string));
    });

    it("reports a missing source as a clash, and fails with the errno code of anything else", async () => {
      const { pool, blobs } = setUp(`fail-${workers}`);
      const missing = await runPoolBatches(
        [
          {
            parent: path.join(pool, "m"),
            dirs: ["missing"],
            links: [[`${blobs[0]}.gone`, path.join(pool, "m", "missing", "missing_1.deb")]],
          },
        ],
        { workers },
      );
      expect(missing).toEqual({ linked: 0, clashes: [path.join(pool, "m", "missing", "missing_1.deb")] });
      // A file where the parent directory should be: mkdir cannot make it.
      writeFileSync(path.join(pool, "f"), "not a directory");
      await expect(
        runPoolBatches(
          [
            {
              parent: path.join(pool, "f", "x"),
              dirs: ["y"],
              links: [[blobs[0] as string, path.join(pool, "f", "x", "y", "z")]],
            },
          ],
          { workers },
        ),
      ).rejects.toMatchObject({ code: "ENOTDIR" });
    });
  });
}
