import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import { ArchiveKey, ensureArchiveKey } from "../../src/publish/archive-key.js";

function toolAvailable(tool: string): boolean {
  const ok = spawnSync(tool, ["--version"], { stdio: "ignore" }).status === 0;
  if (!ok && process.env.CI === "true") throw new Error(`${tool} is required in CI`);
  if (!ok) console.warn(`skipping archive key tests: ${tool} is not installed`);
  return ok;
}

const haveGpg = toolAvailable("gpg") && toolAvailable("gpgv");
const scratch: string[] = [];

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

/** A data directory deep enough that gpg-agent's sockets would not fit under it. */
function deepDataDir(): string {
  const dir = path.join(tempDir("kiln-ak-"), "d".repeat(60), "e".repeat(50));
  mkdirSync(dir, { recursive: true });
  return dir;
}

const gpgEnv = (home: string) => ({ ...process.env, GNUPGHOME: home, LC_ALL: "C" });

/** Runs gpgv against a keyring dearmored from `publicKey`; true when the signature is good. */
function gpgvAccepts(publicKey: string, files: Record<string, string>, args: string[]): boolean {
  const dir = tempDir("kiln-gpgv-");
  const keyring = path.join(dir, "keyring.gpg");
  execFileSync("gpg", ["--batch", "--dearmor", "--output", keyring], {
    input: publicKey,
    env: gpgEnv(dir),
    stdio: "pipe",
  });
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
  const r = spawnSync("gpgv", ["--keyring", keyring, ...args.map((a) => path.join(dir, a))], {
    env: gpgEnv(dir),
  });
  return r.status === 0;
}

function verifyInRelease(publicKey: string, inRelease: string): boolean {
  return gpgvAccepts(publicKey, { InRelease: inRelease }, ["InRelease"]);
}

function verifyDetached(publicKey: string, release: string, signature: string): boolean {
  return gpgvAccepts(publicKey, { Release: release, "Release.gpg": signature }, ["Release.gpg", "Release"]);
}

/** A key made by plain gpg in a home of its own, as an admin would bring one. */
function makeForeignKey(
  uid: string,
  opts: { passphrase?: string } = {},
): { fingerprint: string; secret: string; public: string } {
  const home = tempDir("kg-");
  // A cheap passphrase hash: calibrating the default one takes seconds.
  writeFileSync(path.join(home, "gpg-agent.conf"), "s2k-count 65536\n");
  const pass = ["--pinentry-mode", "loopback", "--passphrase", opts.passphrase ?? ""];
  const env = gpgEnv(home);
  try {
    const status = execFileSync(
      "gpg",
      ["--batch", "--status-fd", "1", ...pass, "--quick-generate-key", uid, "ed25519", "sign", "never"],
      { env, stdio: ["ignore", "pipe", "ignore"] },
    ).toString();
    const fingerprint = /KEY_CREATED [BP] ([0-9A-F]+)/.exec(status)?.[1] ?? "";
    const secret = execFileSync("gpg", ["--batch", ...pass, "--armor", "--export-secret-keys", fingerprint], {
      env,
      stdio: "pipe",
    }).toString();
    const pub = execFileSync("gpg", ["--batch", "--armor", "--export", fingerprint], {
      env,
      stdio: "pipe",
    }).toString();
    return { fingerprint, secret, public: pub };
  } finally {
    spawnSync("gpgconf", ["--kill", "gpg-agent"], { env });
  }
}

/** The secret keys in the key's home, read by plain gpg (through a short link: the home is deep). */
function secretFingerprints(key: ArchiveKey): string[] {
  const link = path.join(tempDir("kiln-ln-"), "h");
  symlinkSync(key.home, link);
  const out = execFileSync("gpg", ["--batch", "--with-colons", "--list-secret-keys"], {
    env: gpgEnv(link),
    stdio: "pipe",
  }).toString();
  return out
    .split("\n")
    .filter((l) => l.startsWith("fpr:"))
    .map((l) => l.split(":")[9] ?? "");
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return err.code;
    throw err;
  }
  return "no error";
}

const RELEASE = [
  "Origin: Kiln",
  "Label: Kiln",
  "Suite: stable",
  "Codename: stable",
  "Date: Sat, 01 Feb 2025 10:00:00 UTC",
  "Architectures: amd64",
  "Components: main",
  "SHA256:",
  " 0b1fc6a7dc66e7e1b0dd5fb5b2d2a8d26a0bd2c5b1d5f6f0f4d3aa7e30a4c0bb 123 main/binary-amd64/Packages",
  "- a line starting with a dash",
  "",
].join("\n");

afterAll(() => {
  for (const dir of scratch.reverse()) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveGpg)("archive key", () => {
  let dataDir: string;
  let key: ArchiveKey;

  beforeAll(async () => {
    dataDir = deepDataDir();
    key = new ArchiveKey(dataDir, { uid: "Kiln test archive <kiln@example.org>" });
    await key.ensure();
  });
  afterAll(async () => {
    await key?.close();
  });

  it("is made once in a private home, even under a deep data directory", async () => {
    expect(path.join(dataDir, "keys", "gnupg").length).toBeGreaterThan(108);
    const first = await key.ensure();
    expect(first).toMatchObject({ uid: "Kiln test archive <kiln@example.org>", algorithm: "ed25519" });
    expect(first.fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(new Date(first.created).toISOString()).toBe(first.created);
    expect(first.publicKeyArmored).toContain("-----BEGIN PGP PUBLIC KEY BLOCK-----");
    expect(statSync(key.home).mode & 0o777).toBe(0o700);

    expect((await key.ensure()).fingerprint).toBe(first.fingerprint);
    // A later start (a new instance, another uid asked for) finds the same key.
    expect((await ensureArchiveKey(dataDir, { uid: "someone else" })).fingerprint).toBe(first.fingerprint);
    const again = new ArchiveKey(dataDir);
    try {
      expect(await again.fingerprint()).toBe(first.fingerprint);
      expect(await again.exportPublicKey()).toBe(first.publicKeyArmored);
    } finally {
      await again.close();
    }
  });

  it("signs InRelease and Release.gpg that gpgv accepts, and gpgv rejects tampered text", async () => {
    const publicKey = await key.exportPublicKey();
    const inRelease = await key.clearSign(RELEASE);
    expect(inRelease).toMatch(/^-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n/);
    expect(verifyInRelease(publicKey, inRelease)).toBe(true);
    expect(verifyInRelease(publicKey, inRelease.replace("Suite: stable", "Suite: stablE"))).toBe(false);

    const detached = await key.detachSign(RELEASE);
    expect(detached).toContain("-----BEGIN PGP SIGNATURE-----");
    expect(verifyDetached(publicKey, RELEASE, detached)).toBe(true);
    expect(verifyDetached(publicKey, `${RELEASE}Extra: 1\n`, detached)).toBe(false);
    // The digest asked for is the one used.
    const packets = execFileSync("gpg", ["--batch", "--list-packets"], {
      input: detached,
      env: gpgEnv(tempDir("kiln-pk-")),
      stdio: "pipe",
    }).toString();
    expect(packets).toMatch(/digest algo 10/);
  });

  it("signs many texts at once, each signature good", async () => {
    const publicKey = await key.exportPublicKey();
    const texts = Array.from({ length: 24 }, (_, i) => `${RELEASE}Serial: ${i}\n`);
    const signed = await Promise.all(
      texts.map(async (t, i) =>
        i % 2 ? { t, sig: await key.detachSign(t) } : { t, sig: await key.clearSign(t) },
      ),
    );
    signed.forEach(({ t, sig }, i) => {
      if (i % 2) expect(verifyDetached(publicKey, t, sig)).toBe(true);
      else {
        expect(verifyInRelease(publicKey, sig)).toBe(true);
        expect(sig).toContain(`Serial: ${i}`);
      }
    });
  });

  it("refuses a bad import with KEY_INVALID and changes nothing", async () => {
    const before = await key.info();
    const keyring = secretFingerprints(key);
    const other = makeForeignKey("Other <other@example.org>");
    const third = makeForeignKey("Third <third@example.org>");
    const locked = makeForeignKey("Locked <locked@example.org>", { passphrase: "s3cret" });

    expect(await codeOf(key.importSecretKey("not a key at all\n"))).toBe("KEY_INVALID");
    expect(await codeOf(key.importSecretKey(""))).toBe("KEY_INVALID");
    expect(await codeOf(key.importSecretKey(other.public))).toBe("KEY_INVALID");
    expect(await codeOf(key.importSecretKey(other.secret + third.secret))).toBe("KEY_INVALID");
    const err = await key.importSecretKey(locked.secret).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe("KEY_INVALID");
    expect((err as KilnError).message).toMatch(/passphrase/);

    expect(await key.info()).toEqual(before);
    expect(secretFingerprints(key)).toEqual(keyring);
    expect(verifyInRelease(before.publicKeyArmored, await key.clearSign(RELEASE))).toBe(true);
  });

  it("imports another key, which signs from then on; the old one stays in the keyring", async () => {
    const old = await key.info();
    const other = makeForeignKey("Imported <imported@example.org>");

    // Signatures asked for while the import runs are good with one key or the other.
    const during = Array.from({ length: 6 }, () => key.clearSign(RELEASE));
    const imported = await key.importSecretKey(other.secret);
    expect(imported.fingerprint).toBe(other.fingerprint);
    expect(imported.uid).toBe("Imported <imported@example.org>");
    for (const sig of await Promise.all(during)) {
      expect(verifyInRelease(old.publicKeyArmored, sig) || verifyInRelease(other.public, sig)).toBe(true);
    }

    const inRelease = await key.clearSign(RELEASE);
    const detached = await key.detachSign(RELEASE);
    const exported = await key.exportPublicKey();
    expect(verifyInRelease(exported, inRelease)).toBe(true);
    expect(verifyInRelease(other.public, inRelease)).toBe(true);
    expect(verifyDetached(exported, RELEASE, detached)).toBe(true);
    expect(verifyInRelease(old.publicKeyArmored, inRelease)).toBe(false);

    expect(secretFingerprints(key)).toEqual(expect.arrayContaining([old.fingerprint, other.fingerprint]));
    // The choice survives a restart.
    expect((await ensureArchiveKey(dataDir)).fingerprint).toBe(other.fingerprint);
    expect(JSON.parse(readFileSync(path.join(dataDir, "keys", "archive-key.json"), "utf8"))).toMatchObject({
      fingerprint: other.fingerprint,
    });
  });
});
