/**
 * The in-process xz decoder against the real xz tool: what xz writes, with every option that
 * changes the stream's shape, decodes to the same bytes; what it cannot do it hands back; and no
 * damaged input ever decodes to different bytes.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { crc64, xzDecompress } from "../../src/debian/xz.js";

const haveXz = spawnSync("xz", ["--version"]).status === 0;
if (!haveXz && process.env.CI === "true") throw new Error("xz is required in CI (apt-get install xz-utils)");

const MB = 1024 * 1024;
const xz = (input: Buffer, ...args: string[]): Buffer =>
  execFileSync("xz", ["-z", "-c", "-q", ...args], { input, maxBuffer: 256 * MB });

function errorOf(fn: () => unknown): { code?: string; message: string } | undefined {
  try {
    fn();
  } catch (err) {
    return err as { code?: string; message: string };
  }
  return undefined;
}

const SAMPLES: [string, Buffer][] = [
  ["empty", Buffer.alloc(0)],
  ["one line", Buffer.from("Package: hello\n")],
  ["random (stored as uncompressed chunks)", randomBytes(150_000)],
  ["repetitive", Buffer.from("Depends: libc6 (>= 2.34)\n".repeat(20_000))],
  ["source text", readFileSync(new URL("../../src/debian/xz.ts", import.meta.url))],
  [
    "mixed, over one chunk",
    Buffer.concat([randomBytes(70_000), Buffer.alloc(300_000, 7), Buffer.from("tail ".repeat(50_000))]),
  ],
];

const OPTIONS: string[][] = [
  ["-0"],
  ["-6"],
  ["-9e"],
  ["--check=crc32"],
  ["--check=crc64"],
  ["--check=sha256"],
  ["--block-size=4096"],
  ["--lzma2=preset=6,lc=0,lp=2,pb=0"],
  ["--lzma2=preset=1,lc=4,lp=0,pb=4"],
  ["--lzma2=preset=3,mf=hc4,nice=8"],
];

describe.skipIf(!haveXz)("xzDecompress", () => {
  it("decodes what xz writes, whatever its options, to the same bytes", () => {
    for (const [what, plain] of SAMPLES) {
      for (const args of OPTIONS) {
        const got = xzDecompress(xz(plain, ...args), 64 * MB);
        expect(got, `${what} with ${args.join(" ")}`).toBeDefined();
        expect(got?.equals(plain), `${what} with ${args.join(" ")}`).toBe(true);
      }
    }
  });

  it("decodes streams one after another, with stream padding between them", () => {
    const a = Buffer.from("first stream\n");
    const b = randomBytes(5000);
    const joined = Buffer.concat([xz(a), Buffer.alloc(8), xz(b, "--check=crc32"), Buffer.alloc(4)]);
    expect(xzDecompress(joined, MB)?.equals(Buffer.concat([a, b]))).toBe(true);
    // Padding must come in fours.
    const odd = Buffer.concat([xz(a), Buffer.alloc(3), xz(a)]);
    expect(errorOf(() => xzDecompress(odd, MB))).toMatchObject({ code: "ARCHIVE_INVALID" });
  });

  it("leaves to the tool what it does not verify or decode: no check, other filters", () => {
    const plain = Buffer.from("hello hello hello\n".repeat(100));
    expect(xzDecompress(xz(plain, "--check=none"), MB)).toBeUndefined();
    expect(xzDecompress(xz(plain, "--delta=dist=2", "--lzma2"), MB)).toBeUndefined();
    expect(xzDecompress(xz(plain, "--x86", "--lzma2"), MB)).toBeUndefined();
  });

  it("stops at the byte limit, a bomb included, with ARCHIVE_TOO_LARGE", () => {
    const plain = Buffer.from("x".repeat(10_000));
    const packed = xz(plain);
    expect(xzDecompress(packed, plain.length)?.length).toBe(plain.length);
    expect(errorOf(() => xzDecompress(packed, plain.length - 1, "c.tar.xz"))).toMatchObject({
      code: "ARCHIVE_TOO_LARGE",
      message: expect.stringMatching(/^c\.tar\.xz decompresses to more than 9999 bytes/) as unknown,
    });
    const bomb = xz(Buffer.alloc(50 * MB));
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(errorOf(() => xzDecompress(bomb, MB))).toMatchObject({ code: "ARCHIVE_TOO_LARGE" });
  });

  it("never turns damaged input into other bytes: each flipped byte and each truncation is refused", () => {
    const plain = Buffer.from("Package: hello\nVersion: 2.10-3\nArchitecture: amd64\n".repeat(8));
    for (const check of ["crc32", "crc64", "sha256"]) {
      const good = xz(plain, `--check=${check}`);
      for (let i = 0; i < good.length; i++) {
        const bad = Buffer.from(good);
        bad[i] = (bad[i] as number) ^ 0x55;
        let got: Buffer | undefined;
        const err = errorOf(() => (got = xzDecompress(bad, MB)));
        // Damage may leave the content intact (a flag bit, padding nobody reads): then it is the content.
        if (err === undefined && got !== undefined)
          expect(got.equals(plain), `byte ${i} (${check})`).toBe(true);
        else if (err !== undefined)
          expect(err.code, `byte ${i} (${check}): ${err.message}`).toBe("ARCHIVE_INVALID");
      }
      for (let n = 0; n < good.length; n++) {
        expect(errorOf(() => xzDecompress(good.subarray(0, n), MB))?.code, `first ${n} bytes`).toBe(
          "ARCHIVE_INVALID",
        );
      }
    }
    expect(errorOf(() => xzDecompress(Buffer.from("definitely not xz"), MB, "x.xz"))?.message).toMatch(
      /^x\.xz: corrupt xz data \(bad magic bytes\)/,
    );
  });

  it("computes xz's CRC-64", () => {
    const [lo, hi] = crc64(Buffer.from("123456789"));
    expect(hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0")).toBe("995dc9bbdf1939fa");
    expect(crc64(Buffer.alloc(0))).toEqual([0, 0]);
  });
});
