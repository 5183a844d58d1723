import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BuildrootCache, CorruptBase, type BaseRef } from "../../src/worker/buildroot-cache.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "kiln-brcache-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A real zstd tarball of a tiny tree holding `marker`, and its ref. */
function makeBase(name: string, bytes: number): { ref: BaseRef; file: string } {
  const tree = path.join(tmp, `tree-${name}`);
  mkdirSync(path.join(tree, "etc"), { recursive: true });
  writeFileSync(path.join(tree, "etc", "marker"), name);
  writeFileSync(path.join(tree, "payload"), Buffer.alloc(bytes, name));
  const file = path.join(tmp, `${name}.tar.zst`);
  execFileSync("tar", ["--numeric-owner", "--zstd", "-cf", file, "-C", tree, "."]);
  const data = readFileSync(file);
  return { ref: { name, sha256: createHash("sha256").update(data).digest("hex"), size: data.length }, file };
}

function hubOf(bases: { ref: BaseRef; file: string }[]) {
  const fetched: string[] = [];
  const fetch = (ref: BaseRef, dest: string) => {
    const base = bases.find((b) => b.ref.sha256 === ref.sha256);
    if (!base) return Promise.reject(new Error("no such blob"));
    fetched.push(ref.name);
    copyFileSync(base.file, dest);
    return Promise.resolve();
  };
  return { fetch, fetched };
}

const signal = new AbortController().signal;

describe("the worker's cache of buildroot bases", () => {
  const a = makeBase("a", 200_000);
  const b = makeBase("b", 200_000);
  const c = makeBase("c", 200_000);

  it("fetches a base once, unpacks it, and serves it from the cache afterwards", async () => {
    const hub = hubOf([a]);
    const cache = new BuildrootCache(path.join(tmp, "c1"), 10 * 1024 ** 2, hub.fetch);
    const first = await cache.acquire(a.ref, signal);
    expect(first.how).toBe("fetched");
    expect(readFileSync(path.join(first.root, "etc", "marker"), "utf8")).toBe("a");
    first.release();
    const second = await cache.acquire(a.ref, signal);
    expect(second.how).toBe("cached");
    second.release();
    expect(hub.fetched).toEqual(["a"]);
  });

  it("evicts the least recently used base nobody holds to stay within its bound", async () => {
    const hub = hubOf([a, b, c]);
    // Room for about two bases (each ~200 kB unpacked plus a small tarball).
    const cache = new BuildrootCache(path.join(tmp, "c2"), 500_000, hub.fetch);
    (await cache.acquire(a.ref, signal)).release();
    const heldB = await cache.acquire(b.ref, signal);
    (await cache.acquire(c.ref, signal)).release();
    const left = (await cache.entries()).map((e) => e.sha256);
    // a was least recently used and free; b is held, c is the newest.
    expect(left).not.toContain(a.ref.sha256);
    expect(left).toContain(b.ref.sha256);
    expect(left).toContain(c.ref.sha256);
    expect(existsSync(path.join(tmp, "c2", a.ref.sha256))).toBe(false);
    heldB.release();
    // Using a again fetches it again and, b now free and older than c, evicts b.
    (await cache.acquire(a.ref, signal)).release();
    const after = (await cache.entries()).map((e) => e.sha256);
    expect(after).toContain(a.ref.sha256);
    expect(after).not.toContain(b.ref.sha256);
    expect(hub.fetched).toEqual(["a", "b", "c", "a"]);
  });

  it("fetches a damaged cached base again instead of using it", async () => {
    const hub = hubOf([a]);
    const dir = path.join(tmp, "c3");
    const cache = new BuildrootCache(dir, 10 * 1024 ** 2, hub.fetch);
    (await cache.acquire(a.ref, signal)).release();
    appendFileSync(path.join(dir, a.ref.sha256, "base.tar.zst"), "rot");
    const logs: string[] = [];
    const again = await cache.acquire(a.ref, signal, (t) => logs.push(t));
    expect(again.how).toBe("fetched");
    expect(logs.join("")).toMatch(/does not match its hash; fetching it again/);
    expect(readFileSync(path.join(again.root, "etc", "marker"), "utf8")).toBe("a");
    again.release();
    expect(hub.fetched).toEqual(["a", "a"]);
  });

  it("refuses a download that is not the base it asked for, keeping nothing", async () => {
    const lying = (_ref: BaseRef, dest: string) => {
      copyFileSync(b.file, dest);
      return Promise.resolve();
    };
    const dir = path.join(tmp, "c4");
    const cache = new BuildrootCache(dir, 10 * 1024 ** 2, lying);
    await expect(cache.acquire(a.ref, signal)).rejects.toBeInstanceOf(CorruptBase);
    expect(existsSync(path.join(dir, a.ref.sha256))).toBe(false);
  });

  it("prepares one base once when two builds ask for it at the same time", async () => {
    const hub = hubOf([a]);
    const cache = new BuildrootCache(path.join(tmp, "c5"), 10 * 1024 ** 2, hub.fetch);
    const [x, y] = await Promise.all([cache.acquire(a.ref, signal), cache.acquire(a.ref, signal)]);
    expect(x.root).toBe(y.root);
    expect([x.how, y.how].sort()).toEqual(["cached", "fetched"]);
    x.release();
    y.release();
    expect(hub.fetched).toEqual(["a"]);
  });
});
