import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { run } from "../../src/cli/main.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const haveGpg = spawnSync("gpg", ["--version"], { stdio: "ignore" }).status === 0;
if (!haveGpg && process.env.CI === "true") throw new Error("gpg is required in CI");
if (!haveGpg) console.warn("skipping the archive key API tests: gpg is not installed");

const scratch: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

/** A passphrase-less signing key made by plain gpg, as an admin would bring one. */
function makeForeignKey(uid: string): { fingerprint: string; secret: string } {
  const home = tempDir("kg-");
  const env = { ...process.env, GNUPGHOME: home };
  try {
    const status = execFileSync(
      "gpg",
      [
        "--batch",
        "--status-fd",
        "1",
        "--passphrase",
        "",
        "--quick-generate-key",
        uid,
        "ed25519",
        "sign",
        "never",
      ],
      { env, stdio: "pipe" },
    ).toString();
    const fingerprint = /KEY_CREATED [BP] ([0-9A-F]+)/.exec(status)?.[1] ?? "";
    const secret = execFileSync("gpg", ["--batch", "--armor", "--export-secret-keys", fingerprint], {
      env,
      stdio: "pipe",
    }).toString();
    return { fingerprint, secret };
  } finally {
    spawnSync("gpgconf", ["--kill", "gpg-agent"], { env });
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return `${String(err.details?.status)} ${err.code}`;
    throw err;
  }
  return "no error";
}

/** Runs `kiln …` in this process and collects what it printed. */
async function kiln(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const so = vi.spyOn(process.stdout, "write").mockImplementation((c) => (out.push(String(c)), true));
  const se = vi.spyOn(process.stderr, "write").mockImplementation((c) => (err.push(String(c)), true));
  try {
    const exit = await run(args);
    return { code: exit, stdout: out.join(""), stderr: err.join("") };
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveGpg).each(dialects)("archive key API and `kiln key` on %s", (dialect) => {
  let t: TestHub;
  let userToken: string;
  const as = (token: string) => ["--hub", t.url, "--token", token];

  beforeAll(async () => {
    t = await startTestHub(dialect);
    userToken = (await t.admin.createToken({ user: "erin", role: "user" })).token;
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("shows the key to any token holder, is listed in OpenAPI, and keeps the same key", async () => {
    expect(await code(t.client().getArchiveKey())).toBe("401 AUTH_REQUIRED");
    const info = await t.client(userToken).getArchiveKey();
    expect(info.fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(info.algorithm).toBe("ed25519");
    expect(info.publicKey).toContain("BEGIN PGP PUBLIC KEY BLOCK");
    expect(await t.admin.getArchiveKey()).toEqual(info);

    const doc = (await (await fetch(`${t.url}/api/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    expect(Object.keys(doc.paths["/api/v1/key"] ?? {}).sort()).toEqual(["get", "post"]);

    const shown = await kiln(["key", "show", ...as(userToken)]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(info.fingerprint);
    expect(shown.stdout).toContain(`${t.url}/apt/kiln-archive-keyring.asc`);
    const json = await kiln(["key", "show", "--json", ...as(userToken)]);
    expect(JSON.parse(json.stdout)).toEqual(info);
  });

  it("exports the public key to stdout or a file", async () => {
    const info = await t.admin.getArchiveKey();
    const toStdout = await kiln(["key", "export", ...as(userToken)]);
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout).toBe(info.publicKey);
    const file = path.join(tempDir("kiln-export-"), "archive.asc");
    const toFile = await kiln(["key", "export", "-o", file, ...as(userToken)]);
    expect(toFile.code).toBe(0);
    expect(toFile.stdout).toBe("");
    expect(readFileSync(file, "utf8")).toBe(info.publicKey);
  });

  it("lets only an admin import a key, refuses bad ones, and signs with the new one", async () => {
    const before = await t.admin.getArchiveKey();
    const other = makeForeignKey("Imported <imported@example.org>");
    const file = path.join(tempDir("kiln-import-"), "secret.asc");
    writeFileSync(file, other.secret);

    expect(await code(t.client(userToken).importArchiveKey(other.secret))).toBe("403 ADMIN_REQUIRED");
    const refused = await kiln(["key", "import", file, ...as(userToken)]);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toContain("ADMIN_REQUIRED");

    expect(await code(t.admin.importArchiveKey("garbage"))).toBe("400 KEY_INVALID");
    expect(await code(t.admin.importArchiveKey(before.publicKey))).toBe("400 KEY_INVALID");
    const bad = await kiln(["key", "import", "--json", "/nonexistent/file.asc", ...as(t.adminToken)]);
    expect(bad.code).toBe(2);
    expect(await t.admin.getArchiveKey()).toEqual(before);

    const imported = await kiln(["key", "import", file, ...as(t.adminToken)]);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain(other.fingerprint);
    const after = await t.admin.getArchiveKey();
    expect(after.fingerprint).toBe(other.fingerprint);
    expect(after.uid).toBe("Imported <imported@example.org>");
    expect(await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text()).toBe(after.publicKey);
    // What the publisher will call signs with the imported key.
    const signed = await t.hub.deps.archiveKey.clearSign("Suite: stable\n");
    const home = tempDir("kiln-verify-");
    const env = { ...process.env, GNUPGHOME: home };
    const keyring = path.join(home, "k.gpg");
    execFileSync("gpg", ["--batch", "--dearmor", "--output", keyring], {
      input: after.publicKey,
      env,
      stdio: "pipe",
    });
    writeFileSync(path.join(home, "InRelease"), signed);
    expect(spawnSync("gpgv", ["--keyring", keyring, path.join(home, "InRelease")], { env }).status).toBe(0);
  });
});
