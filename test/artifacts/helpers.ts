import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { expect } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";

export async function makeTempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kiln-artifacts-"));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The reference implementation: coreutils' sha256sum of a file on disk. */
export function sha256sum(file: string): string {
  const out = execFileSync("sha256sum", ["--", file], { encoding: "utf8" });
  const hash = out.split(" ")[0] ?? "";
  expect(hash).toMatch(/^[0-9a-f]{64}$/);
  return hash;
}

/** Every file under `dir`, relative, sorted; [] when `dir` does not exist. */
export async function filesUnder(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => !e.isDirectory())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

export async function expectKilnError(
  p: Promise<unknown> | (() => unknown),
  code: string,
): Promise<KilnError> {
  let caught: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected KilnError ${code}`).toBeInstanceOf(KilnError);
  expect((caught as KilnError).code).toBe(code);
  return caught as KilnError;
}

/** A source that yields `chunks` and then waits for `release()` before ending. */
export function gatedSource(chunks: Buffer[]): {
  source: AsyncIterable<Buffer>;
  release: () => void;
  started: Promise<void>;
} {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let markStarted!: () => void;
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  async function* gen(): AsyncGenerator<Buffer> {
    for (const c of chunks) yield c;
    markStarted();
    await gate;
  }
  return { source: gen(), release, started };
}

/** A source that never ends; `state.finished` turns true when the consumer abandons it. */
export function endlessSource(chunkSize: number): {
  source: AsyncIterable<Buffer>;
  state: { finished: boolean; sent: number };
} {
  const state = { finished: false, sent: 0 };
  async function* gen(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        await Promise.resolve();
        state.sent += chunkSize;
        yield Buffer.alloc(chunkSize, 0x61);
      }
    } finally {
      state.finished = true;
    }
  }
  return { source: gen(), state };
}
