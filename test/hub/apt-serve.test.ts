import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import {
  cacheControlFor,
  contentTypeFor,
  parseAptPath,
  parseRange,
  planResponse,
} from "../../src/hub/routes/apt.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const haveGpg = spawnSync("gpg", ["--version"], { stdio: "ignore" }).status === 0;
if (!haveGpg && process.env.CI === "true") throw new Error("gpg is required in CI");
if (!haveGpg) console.warn("skipping the keyring tests: gpg is not installed");

const split = (p: string) => p.split("/");

describe("apt paths, types and caching (pure)", () => {
  it("parses request paths and refuses tricks", () => {
    expect(parseAptPath("/apt/dists/stable/InRelease?x=1")).toEqual(["dists", "stable", "InRelease"]);
    expect(parseAptPath("/apt/pool/main/h/hello/hello_1.0%2Bb1_amd64.deb")).toEqual([
      "pool",
      "main",
      "h",
      "hello",
      "hello_1.0+b1_amd64.deb",
    ]);
    expect(parseAptPath("/apt/")).toBeUndefined();
    expect(parseAptPath("/apt/dists/stable/")).toBeUndefined();
    for (const bad of [
      "/apt/../kiln.db",
      "/apt/%2e%2e/kiln.db",
      "/apt/dists/%2E%2E/%2e%2e/kiln.db",
      "/apt/..%2fkiln.db",
      "/apt/pool%5c..%5ckiln.db",
      "/apt/a%00b",
      "/apt/./x",
      "/apt//etc/passwd",
      "/apt/%2Fetc%2Fpasswd",
      "/apt/%E0%A4%A",
      "/apt/a%0Ab",
      "/aptx/y",
    ]) {
      expect(() => parseAptPath(bad), bad).toThrow(KilnError);
      try {
        parseAptPath(bad);
      } catch (err) {
        expect((err as KilnError).code).toBe("APT_PATH_INVALID");
      }
    }
  });

  it("names content types as apt and browsers expect them", () => {
    const cases: [string, string][] = [
      ["pool/main/h/hello/hello_1.0_amd64.deb", "application/vnd.debian.binary-package"],
      ["pool/main/h/hello/hello-udeb_1.0_amd64.udeb", "application/vnd.debian.binary-package"],
      ["pool/main/h/hello/hello_1.0.dsc", "text/plain; charset=utf-8"],
      ["pool/main/h/hello/hello_1.0.tar.gz", "application/gzip"],
      ["pool/main/h/hello/hello_1.0.tar.xz", "application/x-xz"],
      ["dists/stable/main/binary-amd64/Packages.gz", "application/gzip"],
      ["dists/stable/main/binary-amd64/Packages.xz", "application/x-xz"],
      ["dists/stable/Release.gpg", "application/pgp-signature"],
      ["kiln-archive-keyring.asc", "application/pgp-keys"],
      ["dists/stable/Release", "text/plain; charset=utf-8"],
      ["dists/stable/InRelease", "text/plain; charset=utf-8"],
      ["dists/stable/main/binary-amd64/Packages", "text/plain; charset=utf-8"],
      ["dists/stable/main/source/Sources", "text/plain; charset=utf-8"],
      ["dists/stable/main/binary-amd64/by-hash/SHA256/" + "a".repeat(64), "application/octet-stream"],
      ["pool/main/h/hello/index.html", "application/octet-stream"],
    ];
    for (const [p, type] of cases) expect(contentTypeFor(split(p)), p).toBe(type);
  });

  it("lets pool and by-hash files be cached for good, and indexes be revalidated", () => {
    const immutable = "public, max-age=31536000, immutable";
    expect(cacheControlFor(split("pool/main/h/hello/hello_1.0_amd64.deb"))).toBe(immutable);
    expect(cacheControlFor(split("prefix/pool/main/h/hello/hello_1.0.dsc"))).toBe(immutable);
    expect(cacheControlFor(split(`dists/stable/main/binary-amd64/by-hash/SHA256/${"b".repeat(64)}`))).toBe(
      immutable,
    );
    expect(cacheControlFor(split("dists/stable/InRelease"))).toBe("no-cache");
    expect(cacheControlFor(split("dists/stable/main/binary-amd64/Packages.xz"))).toBe("no-cache");
    expect(cacheControlFor(split("pool/dists/stable/Release"))).toBe("no-cache");
  });

  it("parses every single-range form", () => {
    expect(parseRange("bytes=0-9", 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=90-200", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=95-", 100)).toEqual({ start: 95, end: 99 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-500", 100)).toEqual({ start: 0, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-", 0)).toBe("unsatisfiable");
    expect(parseRange("bytes=-5", 0)).toBe("unsatisfiable");
    // Ignored: the whole file is sent.
    expect(parseRange("bytes=0-1,5-6", 100)).toBeUndefined();
    expect(parseRange("bytes=9-1", 100)).toBeUndefined();
    expect(parseRange("bytes=-", 100)).toBeUndefined();
    expect(parseRange("items=0-1", 100)).toBeUndefined();
    expect(parseRange("bytes=a-b", 100)).toBeUndefined();
  });

  it("plans 304s, ranges and If-Range in RFC 9110's order", () => {
    const lastModified = new Date("2025-02-01T10:00:00Z");
    const rep = { size: 100, etag: '"abc"', lastModified };
    expect(planResponse({}, rep)).toEqual({ status: 200 });
    expect(planResponse({ ifNoneMatch: '"abc"' }, rep)).toEqual({ status: 304 });
    expect(planResponse({ ifNoneMatch: 'W/"abc"' }, rep)).toEqual({ status: 304 });
    expect(planResponse({ ifNoneMatch: '"x", "abc"' }, rep)).toEqual({ status: 304 });
    expect(planResponse({ ifNoneMatch: "*" }, rep)).toEqual({ status: 304 });
    // If-None-Match decides alone when present.
    expect(
      planResponse({ ifNoneMatch: '"old"', ifModifiedSince: "Sat, 01 Feb 2025 11:00:00 GMT" }, rep),
    ).toEqual({ status: 200 });
    expect(planResponse({ ifModifiedSince: "Sat, 01 Feb 2025 10:00:00 GMT" }, rep)).toEqual({ status: 304 });
    expect(planResponse({ ifModifiedSince: "Sat, 01 Feb 2025 09:59:59 GMT" }, rep)).toEqual({ status: 200 });
    expect(planResponse({ ifModifiedSince: "garbage" }, rep)).toEqual({ status: 200 });
    expect(planResponse({ range: "bytes=0-9" }, rep)).toEqual({ status: 206, range: { start: 0, end: 9 } });
    expect(planResponse({ range: "bytes=0-9", ifRange: '"abc"' }, rep)).toMatchObject({ status: 206 });
    expect(planResponse({ range: "bytes=0-9", ifRange: '"old"' }, rep)).toEqual({ status: 200 });
    expect(planResponse({ range: "bytes=0-9", ifRange: 'W/"abc"' }, rep)).toEqual({ status: 200 });
    expect(planResponse({ range: "bytes=0-9", ifRange: lastModified.toUTCString() }, rep)).toMatchObject({
      status: 206,
    });
    expect(planResponse({ range: "bytes=0-9", ifRange: "Fri, 31 Jan 2025 10:00:00 GMT" }, rep)).toEqual({
      status: 200,
    });
    expect(planResponse({ range: "bytes=200-" }, rep)).toEqual({ status: 416 });
    expect(planResponse({ range: "bytes=200-", ifNoneMatch: '"abc"' }, rep)).toEqual({ status: 304 });
  });
});

interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request with the path sent exactly as given (fetch would normalise `..` away). */
function raw(
  base: string,
  target: string,
  opts: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawAnswer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: target,
        method: opts.method ?? "GET",
        headers: opts.headers ?? {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe.each(dialects)("serving /apt/ on %s", (dialect) => {
  let t: TestHub;
  let pub: string;
  const deb = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
  const debPath = "pool/main/h/hello/hello_1.0_amd64.deb";
  const packagesGz = Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3, 4]);
  const packagesHash = createHash("sha256").update(packagesGz).digest("hex");
  const SECRET = "TOP-SECRET-OUTSIDE-PUBLIC";

  /** Writes generation `n` of dists/stable and switches the link to it with one rename(2). */
  function publishGeneration(n: number, release: string): void {
    const gen = path.join(pub, ".gen", "stable", String(n));
    mkdirSync(path.join(gen, "main", "binary-amd64", "by-hash", "SHA256"), { recursive: true });
    writeFileSync(path.join(gen, "Release"), release);
    writeFileSync(path.join(gen, "InRelease"), `signed\n${release}`);
    writeFileSync(path.join(gen, "Release.gpg"), "-----BEGIN PGP SIGNATURE-----\n");
    writeFileSync(path.join(gen, "main", "binary-amd64", "Packages"), "Package: hello\n");
    writeFileSync(path.join(gen, "main", "binary-amd64", "Packages.gz"), packagesGz);
    writeFileSync(path.join(gen, "main", "binary-amd64", "Packages.xz"), Buffer.from([0xfd, 0x37, 0x7a]));
    writeFileSync(path.join(gen, "main", "binary-amd64", "by-hash", "SHA256", packagesHash), packagesGz);
    mkdirSync(path.join(pub, "dists"), { recursive: true });
    const tmp = path.join(pub, "dists", `.stable.${n}.tmp`);
    symlinkSync(path.join("..", ".gen", "stable", String(n)), tmp);
    renameSync(tmp, path.join(pub, "dists", "stable"));
  }

  beforeAll(async () => {
    t = await startTestHub(dialect);
    pub = path.join(t.dataDir, "public");
    mkdirSync(path.join(pub, path.dirname(debPath)), { recursive: true });
    writeFileSync(path.join(pub, debPath), deb);
    writeFileSync(path.join(pub, "pool/main/h/hello/hello_1.0.dsc"), "Format: 3.0 (native)\n");
    writeFileSync(path.join(pub, "pool/main/h/hello/empty_1.0_all.deb"), "");
    publishGeneration(1, "Suite: stable\nSerial: 1\n");
    // Things that must never be served.
    writeFileSync(path.join(t.dataDir, "secret.txt"), SECRET);
    symlinkSync(path.join("..", "secret.txt"), path.join(pub, "leak"));
    symlinkSync(path.join(t.dataDir, "secret.txt"), path.join(pub, "dists", "abs-leak"));
    symlinkSync(t.dataDir, path.join(pub, "datadir"));
    mkdirSync(path.join(pub, "pool/main/s"), { recursive: true });
    symlinkSync("../../../../secret.txt", path.join(pub, "pool/main/s/sneaky.deb"));
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("serves files with their type, length, validators and cache policy, without a token", async () => {
    const res = await fetch(`${t.url}/apt/${debPath}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(deb);
    expect(res.headers.get("content-type")).toBe("application/vnd.debian.binary-package");
    expect(res.headers.get("content-length")).toBe(String(deb.length));
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(res.headers.get("etag")).toMatch(/^"[0-9a-f-]+"$/);
    expect(new Date(res.headers.get("last-modified") ?? "").getTime()).toBeGreaterThan(0);
    expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");

    const expectations: [string, string, string][] = [
      ["dists/stable/Release", "text/plain; charset=utf-8", "no-cache"],
      ["dists/stable/InRelease", "text/plain; charset=utf-8", "no-cache"],
      ["dists/stable/Release.gpg", "application/pgp-signature", "no-cache"],
      ["dists/stable/main/binary-amd64/Packages", "text/plain; charset=utf-8", "no-cache"],
      ["dists/stable/main/binary-amd64/Packages.gz", "application/gzip", "no-cache"],
      ["dists/stable/main/binary-amd64/Packages.xz", "application/x-xz", "no-cache"],
      [
        `dists/stable/main/binary-amd64/by-hash/SHA256/${packagesHash}`,
        "application/octet-stream",
        "public, max-age=31536000, immutable",
      ],
      ["pool/main/h/hello/hello_1.0.dsc", "text/plain; charset=utf-8", "public, max-age=31536000, immutable"],
    ];
    for (const [p, type, cache] of expectations) {
      const r = await fetch(`${t.url}/apt/${p}`);
      expect(r.status, p).toBe(200);
      expect(r.headers.get("content-type"), p).toBe(type);
      expect(r.headers.get("cache-control"), p).toBe(cache);
      await r.arrayBuffer();
    }
    const byHash = await fetch(`${t.url}/apt/dists/stable/main/binary-amd64/by-hash/SHA256/${packagesHash}`);
    expect(Buffer.from(await byHash.arrayBuffer())).toEqual(packagesGz);

    const empty = await fetch(`${t.url}/apt/pool/main/h/hello/empty_1.0_all.deb`);
    expect(empty.status).toBe(200);
    expect(empty.headers.get("content-length")).toBe("0");
    expect((await empty.arrayBuffer()).byteLength).toBe(0);
  });

  it("ignores credentials apt may send, while the API still checks them", async () => {
    const bogus = { authorization: "Basic " + Buffer.from("apt:not-a-kiln-token").toString("base64") };
    const res = await fetch(`${t.url}/apt/dists/stable/Release`, { headers: bogus });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Suite: stable\nSerial: 1\n");
    const api = await fetch(`${t.url}/api/v1/tasks`, { headers: bogus });
    expect(api.status).toBe(401);
    // Unknown routes still answer with the usual JSON error when a token is given.
    const unknown = await fetch(`${t.url}/nowhere`, { headers: bogus });
    expect(unknown.status).toBe(401);
  });

  it("answers HEAD with GET's headers and no body", async () => {
    const get = await raw(t.url, `/apt/${debPath}`);
    const head = await raw(t.url, `/apt/${debPath}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    for (const h of [
      "content-type",
      "content-length",
      "etag",
      "last-modified",
      "cache-control",
      "accept-ranges",
    ]) {
      expect(head.headers[h], h).toBe(get.headers[h]);
    }
    const headRange = await raw(t.url, `/apt/${debPath}`, {
      method: "HEAD",
      headers: { range: "bytes=0-9" },
    });
    expect(headRange.status).toBe(206);
    expect(headRange.headers["content-length"]).toBe("10");
    expect(headRange.body.length).toBe(0);
    const missing = await raw(t.url, "/apt/dists/stable/Nope", { method: "HEAD" });
    expect(missing.status).toBe(404);
  });

  it("serves each Range form with 206, and 416 when out of the file", async () => {
    const get = (range: string, extra: Record<string, string> = {}) =>
      raw(t.url, `/apt/${debPath}`, { headers: { range, ...extra } });

    let r = await get("bytes=10-19");
    expect(r.status).toBe(206);
    expect(r.headers["content-range"]).toBe(`bytes 10-19/${deb.length}`);
    expect(r.headers["content-length"]).toBe("10");
    expect(r.body).toEqual(deb.subarray(10, 20));

    r = await get("bytes=2990-");
    expect(r.status).toBe(206);
    expect(r.headers["content-range"]).toBe(`bytes 2990-2999/${deb.length}`);
    expect(r.body).toEqual(deb.subarray(2990));

    r = await get("bytes=-7");
    expect(r.status).toBe(206);
    expect(r.headers["content-range"]).toBe(`bytes 2993-2999/${deb.length}`);
    expect(r.body).toEqual(deb.subarray(2993));

    r = await get("bytes=2990-99999");
    expect(r.status).toBe(206);
    expect(r.body).toEqual(deb.subarray(2990));

    r = await get("bytes=3000-");
    expect(r.status).toBe(416);
    expect(r.headers["content-range"]).toBe(`bytes */${deb.length}`);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: { code: "RANGE_NOT_SATISFIABLE" } });

    r = await get("bytes=0-1,5-6");
    expect(r.status).toBe(200);
    expect(r.body).toEqual(deb);

    const etag = r.headers.etag ?? "";
    r = await get("bytes=0-3", { "if-range": etag });
    expect(r.status).toBe(206);
    expect(r.body).toEqual(deb.subarray(0, 4));
    r = await get("bytes=0-3", { "if-range": '"stale"' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual(deb);
  });

  it("answers 304 to If-None-Match and If-Modified-Since, and 200 when the file changed", async () => {
    const first = await raw(t.url, "/apt/dists/stable/Release");
    const etag = first.headers.etag ?? "";
    const lastModified = first.headers["last-modified"] ?? "";

    let r = await raw(t.url, "/apt/dists/stable/Release", { headers: { "if-none-match": etag } });
    expect(r.status).toBe(304);
    expect(r.body.length).toBe(0);
    expect(r.headers.etag).toBe(etag);
    r = await raw(t.url, "/apt/dists/stable/Release", { headers: { "if-modified-since": lastModified } });
    expect(r.status).toBe(304);

    r = await raw(t.url, "/apt/dists/stable/Release", { headers: { "if-none-match": '"something-else"' } });
    expect(r.status).toBe(200);
    r = await raw(t.url, "/apt/dists/stable/Release", {
      headers: { "if-modified-since": new Date(Date.parse(lastModified) - 60_000).toUTCString() },
    });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("Suite: stable\nSerial: 1\n");
  });

  it("never serves anything outside public/, however the path is written", async () => {
    const attempts = [
      "/apt/../kiln.db",
      "/apt/../secret.txt",
      "/apt/%2e%2e/secret.txt",
      "/apt/%2E%2E/kiln.db",
      "/apt/dists/%2e%2e/%2e%2e/secret.txt",
      "/apt/..%2fsecret.txt",
      "/apt/..%5csecret.txt",
      "/apt/pool/..\\..\\secret.txt",
      "/apt/%00",
      "/apt//secret.txt",
      "/apt/leak",
      "/apt/dists/abs-leak",
      "/apt/datadir/secret.txt",
      "/apt/datadir/kiln.db",
      "/apt/pool/main/s/sneaky.deb",
      "/apt/.gen/stable/1/Release",
      "/apt/",
      "/apt/dists",
      "/apt/dists/stable/",
      "/apt/dists/stable",
    ];
    for (const target of attempts) {
      const r = await raw(t.url, target);
      expect([400, 404], target).toContain(r.status);
      expect(r.body.toString(), target).not.toContain(SECRET);
      expect(r.body.toString(), target).not.toContain("SQLite");
      const code = (JSON.parse(r.body.toString()) as { error: { code: string } }).error.code;
      expect(["APT_PATH_INVALID", "NOT_FOUND"], target).toContain(code);
    }
    expect((await raw(t.url, "/apt/%2e%2e/secret.txt")).status).toBe(400);
    expect((await raw(t.url, "/apt/leak")).status).toBe(404);
  });

  it("follows a symlink switched between two requests, and keeps a response in flight on its file", async () => {
    expect(await (await fetch(`${t.url}/apt/dists/stable/Release`)).text()).toBe(
      "Suite: stable\nSerial: 1\n",
    );
    publishGeneration(2, "Suite: stable\nSerial: 2\n");
    expect(await (await fetch(`${t.url}/apt/dists/stable/Release`)).text()).toBe(
      "Suite: stable\nSerial: 2\n",
    );
    expect(await (await fetch(`${t.url}/apt/dists/stable/InRelease`)).text()).toBe(
      "signed\nSuite: stable\nSerial: 2\n",
    );

    // A large index: the switch (and even the old generation's removal) lands mid-response.
    const big = Buffer.alloc(8 * 1024 * 1024, "a");
    const bigPath = path.join(pub, ".gen", "stable", "2", "main", "binary-amd64", "Packages");
    writeFileSync(bigPath, big);
    const res = await fetch(`${t.url}/apt/dists/stable/main/binary-amd64/Packages`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const chunks: Uint8Array[] = [];
    const first = await reader.read();
    if (first.value) chunks.push(first.value);
    publishGeneration(3, "Suite: stable\nSerial: 3\n");
    rmSync(path.join(pub, ".gen", "stable", "2"), { recursive: true, force: true });
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    const got = Buffer.concat(chunks);
    expect(got.length).toBe(big.length);
    expect(got.equals(big)).toBe(true);
    expect(await (await fetch(`${t.url}/apt/dists/stable/main/binary-amd64/Packages`)).text()).toBe(
      "Package: hello\n",
    );
  });

  it.skipIf(!haveGpg)("serves the archive keyring, which gpg --dearmor takes", async () => {
    const res = await fetch(`${t.url}/apt/kiln-archive-keyring.asc`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/pgp-keys");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const armored = await res.text();
    const info = await t.admin.getArchiveKey();
    expect(armored).toBe(info.publicKey);

    const home = mkdtempSync(path.join(os.tmpdir(), "kiln-dearmor-"));
    try {
      const env = { ...process.env, GNUPGHOME: home };
      const keyring = path.join(home, "kiln-archive-keyring.gpg");
      execFileSync("gpg", ["--batch", "--dearmor", "--output", keyring], {
        input: armored,
        env,
        stdio: "pipe",
      });
      const shown = execFileSync("gpg", ["--batch", "--with-colons", "--show-keys", keyring], {
        env,
        stdio: "pipe",
      }).toString();
      expect(shown).toContain(`fpr:::::::::${info.fingerprint}:`);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }

    const again = await raw(t.url, "/apt/kiln-archive-keyring.asc", {
      headers: { "if-none-match": res.headers.get("etag") ?? "" },
    });
    expect(again.status).toBe(304);
    const head = await raw(t.url, "/apt/kiln-archive-keyring.asc", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(Buffer.byteLength(armored)));
  });
});
