import { execFileSync } from "node:child_process";
import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  compressionFromExtension,
  decompress,
  decompressSmall,
  type Compression,
} from "../../src/debian/decompress.js";
import { expectDebianError, gzipZeros, haveTool } from "./helpers.js";

const MB = 1024 * 1024;
function compressWith(tool: string, args: string[], data: Buffer): Buffer {
  return execFileSync(tool, args, { input: data, maxBuffer: 256 * MB });
}

function* chunks(buf: Buffer, size = 4096): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(c);
  return Buffer.concat(out);
}

const SAMPLE = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));

/** Buffer.equals, not toEqual: vitest compares big buffers byte by byte, slowly. */
function expectSample(got: Buffer): void {
  expect(got.length).toBe(SAMPLE.length);
  expect(got.equals(SAMPLE)).toBe(true);
}

const TOOLS: Array<[Compression, string, string[]]> = [
  ["xz", "xz", ["-c"]],
  ["zstd", "zstd", ["-c", "-q"]],
  ["bzip2", "bzip2", ["-c"]],
  ["lzma", "xz", ["--format=lzma", "-c"]],
];

describe("decompress", () => {
  it("maps member extensions to compressions", () => {
    expect(compressionFromExtension("")).toBe("none");
    expect(compressionFromExtension(".gz")).toBe("gzip");
    expect(compressionFromExtension(".xz")).toBe("xz");
    expect(compressionFromExtension(".zst")).toBe("zstd");
    expect(compressionFromExtension(".Z")).toBeUndefined();
    expect(compressionFromExtension(".toString")).toBeUndefined();
  });

  it("passes plain data through, counted", async () => {
    expectSample(await collect(decompress(chunks(SAMPLE), "none", { maxBytes: SAMPLE.length })));
    await expectDebianError(
      collect(decompress(chunks(SAMPLE), "none", { maxBytes: SAMPLE.length - 1 })),
      "ARCHIVE_TOO_LARGE",
    );
  });

  it("gunzips, including multi-member gzip", async () => {
    const gz = Buffer.concat([zlib.gzipSync(SAMPLE.subarray(0, 1000)), zlib.gzipSync(SAMPLE.subarray(1000))]);
    expectSample(await collect(decompress(chunks(gz, 333), "gzip", { maxBytes: 10 * MB })));
  });

  it("refuses corrupt gzip data", async () => {
    const gz = zlib.gzipSync(SAMPLE);
    gz.writeUInt8(gz.readUInt8(gz.length >> 1) ^ 0xff, gz.length >> 1);
    const err = await expectDebianError(
      collect(decompress(chunks(gz), "gzip", { maxBytes: 10 * MB, name: "x.gz" })),
      "ARCHIVE_INVALID",
    );
    expect(err.message).toMatch(/^x\.gz: corrupt gzip data/);
    await expectDebianError(
      collect(decompress(chunks(Buffer.from("not gzip")), "gzip", { maxBytes: MB })),
      "ARCHIVE_INVALID",
    );
  });

  it("inflates small gzip at once, with the stream's limit and errors", () => {
    const gz = Buffer.concat([zlib.gzipSync(SAMPLE.subarray(0, 1000)), zlib.gzipSync(SAMPLE.subarray(1000))]);
    expect(gz.length).toBeLessThan(64 * 1024);
    expectSample(decompressSmall(gz, "gzip", { maxBytes: SAMPLE.length })!);
    const over = (() => {
      try {
        decompressSmall(gz, "gzip", { maxBytes: SAMPLE.length - 1, name: "s.gz" });
      } catch (err) {
        return err as { code?: string; message: string };
      }
    })();
    expect(over).toMatchObject({
      code: "ARCHIVE_TOO_LARGE",
      message: expect.stringMatching(/^s\.gz decompresses to more than/) as unknown,
    });
    // 20 MB of zeros in ~20 KB: stopped at the limit, not inflated whole.
    const bomb = zlib.gzipSync(Buffer.alloc(20 * MB));
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(() => decompressSmall(bomb, "gzip", { maxBytes: MB })).toThrow(/decompression limit/);
    const broken = Buffer.from(gz);
    broken.writeUInt8(broken.readUInt8(broken.length >> 1) ^ 0xff, broken.length >> 1);
    expect(() => decompressSmall(broken, "gzip", { maxBytes: 10 * MB, name: "b.gz" })).toThrow(
      /^b\.gz: corrupt gzip data/,
    );
    // Not small, or not gzip: left to decompress().
    expect(decompressSmall(Buffer.alloc(64 * 1024 + 1), "gzip", { maxBytes: MB })).toBeUndefined();
    expect(decompressSmall(gz, "zstd", { maxBytes: MB })).toBeUndefined();
  });

  it("stops a gzip bomb at the limit without decompressing the rest", async () => {
    const bomb = await gzipZeros(200);
    let pulled = 0;
    function* counting(): Generator<Buffer> {
      for (let i = 0; i < bomb.length; i += 4096) {
        pulled += Math.min(4096, bomb.length - i);
        yield bomb.subarray(i, i + 4096);
      }
    }
    let out = 0;
    const err = await expectDebianError(
      (async () => {
        for await (const c of decompress(counting(), "gzip", { maxBytes: 50 * MB, name: "bomb.gz" }))
          out += c.length;
      })(),
      "ARCHIVE_TOO_LARGE",
    );
    expect(err.message).toBe(
      `bomb.gz decompresses to more than ${50 * MB} bytes; refused (decompression limit)`,
    );
    expect(out).toBeLessThanOrEqual(50 * MB);
    // Roughly a quarter of the input makes 50 of the 200 MiB; far from all of it was read.
    expect(pulled).toBeLessThan(bomb.length * 0.5);
  });

  for (const [compression, tool, args] of TOOLS) {
    describe.runIf(haveTool(tool))(`${compression} via ${tool}`, () => {
      it("decompresses a stream", async () => {
        const packed = compressWith(tool, args, SAMPLE);
        expectSample(await collect(decompress(chunks(packed, 1000), compression, { maxBytes: 10 * MB })));
      });

      it("refuses corrupt data with the tool's message", async () => {
        const packed = compressWith(tool, args, SAMPLE);
        const broken = Buffer.concat([packed.subarray(0, packed.length >> 1), Buffer.alloc(64, 0x55)]);
        const err = await expectDebianError(
          collect(decompress(chunks(broken), compression, { maxBytes: 10 * MB, name: "m" })),
          "ARCHIVE_INVALID",
        );
        expect(err.message).toContain(`m: ${tool} cannot decompress it`);
      });

      it("stops early when the consumer does", async () => {
        const packed = compressWith(tool, args, SAMPLE);
        for await (const chunk of decompress(chunks(packed), compression, { maxBytes: 10 * MB })) {
          expect(chunk.length).toBeGreaterThan(0);
          break;
        }
      });
    });
  }

  describe.runIf(haveTool("xz") && haveTool("zstd"))("bombs through external tools", () => {
    it.each([
      ["xz", "xz -0 -T1 -c"],
      ["zstd", "zstd -1 -q -c"],
    ] as const)("stops a %s bomb at the limit", async (compression, command) => {
      const bomb = execFileSync("sh", ["-c", `head -c ${200 * MB} /dev/zero | ${command}`], {
        maxBuffer: 64 * MB,
      });
      expect(bomb.length).toBeLessThan(2 * MB);
      let out = 0;
      await expectDebianError(
        (async () => {
          for await (const c of decompress(chunks(bomb), compression, { maxBytes: 50 * MB })) out += c.length;
        })(),
        "ARCHIVE_TOO_LARGE",
      );
      expect(out).toBeLessThanOrEqual(50 * MB);
    });
  });

  it("says so when the decompressor is not installed", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      const err = await collect(decompress([Buffer.from("x")], "zstd", { maxBytes: MB, name: "m" })).catch(
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toBe("INTERNAL");
      expect((err as Error).message).toContain("Cannot run zstd to decompress m");
    } finally {
      process.env.PATH = path;
    }
  });

  it("reports a failing input stream as itself", async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield zlib.gzipSync(SAMPLE).subarray(0, 100);
      await Promise.resolve();
      throw new Error("disk on fire");
    }
    await expect(collect(decompress(failing(), "gzip", { maxBytes: MB }))).rejects.toThrow("disk on fire");
    if (haveTool("xz")) {
      async function* failingXz(): AsyncGenerator<Buffer> {
        yield compressWith("xz", ["-c"], SAMPLE).subarray(0, 100);
        await Promise.resolve();
        throw new Error("disk on fire");
      }
      await expect(collect(decompress(failingXz(), "xz", { maxBytes: MB }))).rejects.toThrow("disk on fire");
    }
  });
});
