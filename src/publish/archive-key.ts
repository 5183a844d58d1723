/**
 * The OpenPGP key that signs published repositories (InRelease, Release.gpg), kept in a GnuPG
 * home of Kiln's own at `<data>/keys/gnupg`; `<data>/keys/archive-key.json` names the key that
 * signs, so an imported key replaces the generated one while both stay in the keyring.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { KilnError } from "../errors/catalogue.js";

export interface ArchiveKeyInfo {
  fingerprint: string;
  uid: string;
  /** As gpg names it: `ed25519`, `rsa4096`, `nistp256`… */
  algorithm: string;
  /** When the key was made (ISO 8601). */
  created: string;
  publicKeyArmored: string;
}

export interface ArchiveKeyOptions {
  /** User ID of a key generated on first use; an existing key keeps its own. */
  uid?: string;
  /** The gpg binary; gpgconf is looked up beside it under the same name scheme. */
  gpg?: string;
  gpgconf?: string;
}

interface GpgResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** gpg binds sockets of at most 107 bytes; the longest it makes is `S.gpg-agent.browser`. */
const SUN_PATH_MAX = 107;
const LONGEST_SOCKET = "/S.gpg-agent.browser";
const STATE_FILE = "archive-key.json";

/**
 * Readers (signatures) run side by side; a writer (generation, import) waits for the readers in
 * flight and holds new ones back, so a signature made after an import returns uses the new key.
 */
class ReadWriteLock {
  private writing: Promise<void> = Promise.resolve();
  private readonly readers = new Set<Promise<unknown>>();

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const current = this.writing;
      await current;
      if (current === this.writing) break;
    }
    const p = fn();
    this.readers.add(p);
    try {
      return await p;
    } finally {
      this.readers.delete(p);
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.writing;
    let release!: () => void;
    this.writing = new Promise((resolve) => (release = resolve));
    try {
      await previous;
      await Promise.allSettled([...this.readers]);
      return await fn();
    } finally {
      release();
    }
  }
}

/** One record of `gpg --with-colons` output, split on its colons. */
function colonRecords(text: string): string[][] {
  return text
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => line.split(":"));
}

/** gpg escapes `:` and non-printable bytes in colon output as `\xHH`. */
function unescapeColon(value: string): string {
  const bytes = Buffer.from(
    value.replace(/\\x([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))),
    "latin1",
  );
  return bytes.toString("utf8");
}

function algorithmName(algo: string, bits: string, curve: string): string {
  switch (algo) {
    case "1":
    case "2":
    case "3":
      return `rsa${bits}`;
    case "17":
      return `dsa${bits}`;
    case "16":
    case "20":
      return `elg${bits}`;
    case "18":
    case "19":
    case "22":
      return curve || `ecc${bits}`;
    default:
      return `algo${algo}`;
  }
}

interface ListedKey {
  fingerprint: string;
  uid: string;
  algorithm: string;
  created: number;
  /** Primary key record type: `sec` or `pub`. */
  type: string;
  validity: string;
  capabilities: string;
}

/** Primary keys from `--with-colons --fixed-list-mode` output, each with its first uid. */
function parseKeys(text: string): ListedKey[] {
  const keys: ListedKey[] = [];
  let current: ListedKey | undefined;
  let wantFpr = false;
  for (const f of colonRecords(text)) {
    const type = f[0];
    if (type === "sec" || type === "pub") {
      current = {
        fingerprint: "",
        uid: "",
        algorithm: algorithmName(f[3] ?? "", f[2] ?? "", f[16] ?? ""),
        created: Number(f[5] ?? 0),
        type,
        validity: f[1] ?? "",
        capabilities: f[11] ?? "",
      };
      keys.push(current);
      wantFpr = true;
    } else if (type === "ssb" || type === "sub") {
      wantFpr = false;
    } else if (type === "fpr" && current && wantFpr) {
      current.fingerprint = f[9] ?? "";
      wantFpr = false;
    } else if (type === "uid" && current && !current.uid) {
      current.uid = unescapeColon(f[9] ?? "");
    }
  }
  return keys;
}

/** Usable for signing: not revoked, expired or disabled, and some (sub)key can sign. */
function canSign(key: ListedKey): boolean {
  return !/[redni]/.test(key.validity) && key.capabilities.includes("S") && !key.capabilities.includes("D");
}

function checkUid(uid: string): string {
  if (!uid.trim() || [...uid].some((c) => c < " " || c === "\u007f") || uid.length > 256)
    throw new KilnError("CONFIG_INVALID", `the archive key's user ID ${JSON.stringify(uid)} is not usable`);
  return uid.trim();
}

/** A directory in a short temporary place, for aliases and scratch homes. */
function shortTempBase(): string {
  const tmp = os.tmpdir();
  return tmp.length <= 40 ? tmp : "/tmp";
}

/**
 * The archive signing key. Everything is lazy: the first call that needs the key creates the
 * GnuPG home and generates (or adopts) the key; `ensure()` does that up front.
 */
export class ArchiveKey {
  /** `<data>/keys/gnupg`. */
  readonly home: string;
  private readonly stateFile: string;
  private readonly uid: string;
  private readonly gpgBin: string;
  private readonly gpgconfBin: string;
  private readonly lock = new ReadWriteLock();
  /** Set when the home is too deep for gpg-agent's sockets: a short directory holding a link to it. */
  private aliasDir: string | undefined;
  private setup: Promise<void> | undefined;
  private fingerprintInUse: string | undefined;
  private cachedInfo: ArchiveKeyInfo | undefined;
  private closed = false;

  constructor(dataDir: string, opts: ArchiveKeyOptions = {}) {
    this.home = path.resolve(dataDir, "keys", "gnupg");
    this.stateFile = path.resolve(dataDir, "keys", STATE_FILE);
    this.uid = checkUid(opts.uid ?? `Kiln archive key (${os.hostname()})`);
    this.gpgBin = opts.gpg ?? "gpg";
    this.gpgconfBin = opts.gpgconf ?? "gpgconf";
  }

  /** Makes the key on first use (idempotent) and describes it. */
  async ensure(): Promise<ArchiveKeyInfo> {
    await this.ready();
    return this.info();
  }

  async fingerprint(): Promise<string> {
    await this.ready();
    return this.lock.shared(() => Promise.resolve(this.current()));
  }

  async info(): Promise<ArchiveKeyInfo> {
    await this.ready();
    return this.lock.shared(async () => {
      const fpr = this.current();
      if (this.cachedInfo?.fingerprint === fpr) return this.cachedInfo;
      const key = await this.findSecretKey(fpr);
      if (!key) throw new KilnError("KEY_UNAVAILABLE", `the archive key ${fpr} is not in ${this.home}`);
      const info: ArchiveKeyInfo = {
        fingerprint: fpr,
        uid: key.uid,
        algorithm: key.algorithm,
        created: new Date(key.created * 1000).toISOString(),
        publicKeyArmored: await this.exportArmored(fpr),
      };
      this.cachedInfo = info;
      return info;
    });
  }

  /** The armored public key of the signing key (its subkeys included, no other key). */
  async exportPublicKey(): Promise<string> {
    return (await this.info()).publicKeyArmored;
  }

  /** An InRelease: `text` clear-signed. */
  clearSign(text: string): Promise<string> {
    return this.sign(text, "--clearsign");
  }

  /** A Release.gpg: an armored detached signature of `text`'s bytes. */
  detachSign(text: string): Promise<string> {
    return this.sign(text, "--detach-sign");
  }

  /**
   * Makes `armored` (one passphrase-less secret key that can sign) the signing key. It is tried
   * in a scratch home first, so a key that would not sign is refused with nothing changed here.
   * The previous key stays in the keyring, unused.
   */
  async importSecretKey(armored: string): Promise<ArchiveKeyInfo> {
    await this.ready();
    const candidate = await this.validateSecretKey(armored);
    await this.lock.exclusive(async () => {
      const r = await this.gpg(["--import"], armored);
      if (r.code !== 0 || !(await this.findSecretKey(candidate))) {
        throw new KilnError("KEY_UNAVAILABLE", `gpg could not import the key: ${lastLines(r.stderr)}`);
      }
      await this.writeState(candidate);
      this.fingerprintInUse = candidate;
      this.cachedInfo = undefined;
    });
    return this.info();
  }

  /** Waits for signatures in flight, then stops this home's gpg-agent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const setup = this.setup;
    if (!setup) return;
    try {
      await setup;
    } catch {
      // Nothing to stop if setting up failed.
    }
    await this.lock.exclusive(async () => {
      try {
        await this.run(this.gpgconfBin, ["--homedir", await this.gpgHome(), "--kill", "gpg-agent"]);
        if (this.aliasDir) await rm(this.aliasDir, { recursive: true, force: true });
      } catch {
        // Shutting down: an agent left behind exits by itself once its socket is gone.
      }
    });
  }

  private current(): string {
    if (!this.fingerprintInUse) throw new KilnError("KEY_UNAVAILABLE", "the archive key is not set up");
    return this.fingerprintInUse;
  }

  private ready(): Promise<void> {
    if (this.closed) return Promise.reject(new KilnError("KEY_UNAVAILABLE", "the archive key is closed"));
    if (!this.setup) {
      const setup = this.lock.exclusive(() => this.prepare());
      // A failure (gpg missing, say) is not remembered: the next call tries again.
      setup.catch(() => {
        if (this.setup === setup) this.setup = undefined;
      });
      this.setup = setup;
    }
    return this.setup;
  }

  private async prepare(): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    // gpg warns about (and agents refuse) a home others can read.
    await chmod(this.home, 0o700);
    await this.chooseGpgHome();
    // One agent up front, so that a burst of first signatures does not race to start it.
    const launched = await this.run(this.gpgconfBin, [
      "--homedir",
      await this.gpgHome(),
      "--launch",
      "gpg-agent",
    ]);
    if (launched.code !== 0) {
      throw new KilnError("KEY_UNAVAILABLE", `gpg-agent does not start: ${lastLines(launched.stderr)}`);
    }

    const state = await this.readState();
    if (state) {
      if (!(await this.findSecretKey(state))) {
        throw new KilnError(
          "KEY_UNAVAILABLE",
          `the archive key ${state} named in ${this.stateFile} has no secret key in ${this.home}`,
        );
      }
      this.fingerprintInUse = state;
      return;
    }
    // No record but a key: a start that died between generating and recording it. Adopting it
    // keeps the key clients may already trust.
    const existing = parseKeys(
      (await this.gpgOk(["--with-colons", "--fixed-list-mode", "--list-secret-keys"])).toString("utf8"),
    )
      .filter(canSign)
      .sort((a, b) => b.created - a.created)[0];
    const fpr = existing?.fingerprint ?? (await this.generate());
    await this.writeState(fpr);
    this.fingerprintInUse = fpr;
  }

  private async generate(): Promise<string> {
    const r = await this.gpg([
      "--status-fd",
      "1",
      "--passphrase",
      "",
      "--quick-generate-key",
      this.uid,
      "ed25519",
      "sign",
      "never",
    ]);
    const fpr = /^\[GNUPG:\] KEY_CREATED [BP] ([0-9A-F]{40,64})/m.exec(r.stdout.toString("utf8"))?.[1];
    if (r.code !== 0 || !fpr) {
      throw new KilnError(
        "KEY_UNAVAILABLE",
        `gpg could not generate the archive key: ${lastLines(r.stderr)}`,
      );
    }
    return fpr;
  }

  /**
   * Decides how gpg is given the home. Its agent binds sockets in the home (or under
   * /run/user/<uid> when that exists); a deep data directory makes those paths too long for a
   * socket, so gpg then gets a short symlink to the same directory instead.
   */
  private async chooseGpgHome(): Promise<void> {
    if ((await this.socketDir(this.home)).length + LONGEST_SOCKET.length <= SUN_PATH_MAX) return;
    const uid = process.getuid?.() ?? 0;
    const tag = createHash("sha256").update(this.home).digest("hex").slice(0, 16);
    // The same name on every start, so a restarted hub finds the agent it left running.
    this.aliasDir = path.join(shortTempBase(), `kiln-gpg-${uid}-${tag}`);
    const link = await this.gpgHome();
    if ((await this.socketDir(link)).length + LONGEST_SOCKET.length > SUN_PATH_MAX) {
      throw new KilnError("KEY_UNAVAILABLE", `no short path for gpg-agent's sockets (tried ${link})`);
    }
  }

  /**
   * The home as gpg is given it. A short alias is checked on every use and made again when it
   * has gone (another instance closed, /tmp cleaned), in a private directory of our own.
   */
  private async gpgHome(): Promise<string> {
    const dir = this.aliasDir;
    if (!dir) return this.home;
    const link = path.join(dir, "h");
    if ((await isOwnPrivateDir(dir)) && (await readlink(link).catch(() => undefined)) === this.home)
      return link;
    if (!(await makeOwnPrivateDir(dir))) {
      // Someone else holds that name: a random one, used from now on.
      this.aliasDir = await mkdtemp(path.join(shortTempBase(), "kiln-gpg-"));
      return this.gpgHome();
    }
    await unlink(link).catch(() => undefined);
    await symlink(this.home, link).catch(async (err: NodeJS.ErrnoException) => {
      // Another process made the same alias at the same moment.
      if (err.code !== "EEXIST" || (await readlink(link)) !== this.home) throw err;
    });
    return link;
  }

  private async socketDir(home: string): Promise<string> {
    const r = await this.run(this.gpgconfBin, ["--homedir", home, "--list-dirs", "socketdir"]);
    const dir = r.stdout.toString("utf8").trim();
    if (r.code !== 0 || !dir)
      throw new KilnError("KEY_UNAVAILABLE", `gpgconf failed: ${lastLines(r.stderr)}`);
    // gpgconf percent-escapes its output.
    return dir.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }

  private async sign(text: string, mode: "--clearsign" | "--detach-sign"): Promise<string> {
    await this.ready();
    return this.lock.shared(async () => {
      const fpr = this.current();
      const r = await this.gpg(
        ["--digest-algo", "SHA512", "--local-user", fpr, "--armor", "--output", "-", mode],
        text,
      );
      if (r.code !== 0) {
        throw new KilnError("KEY_UNAVAILABLE", `gpg could not sign with ${fpr}: ${lastLines(r.stderr)}`);
      }
      return r.stdout.toString("utf8");
    });
  }

  /** Checks `armored` and tries it in a scratch home; returns its fingerprint. */
  private async validateSecretKey(armored: string): Promise<string> {
    const scratch = await mkdtemp(path.join(shortTempBase(), "kiln-gpg-import-"));
    const run = (args: string[], input?: string) => this.gpg(args, input, scratch);
    try {
      const shown = await run(
        ["--with-colons", "--fixed-list-mode", "--import-options", "show-only", "--import"],
        armored,
      );
      const keys = parseKeys(shown.stdout.toString("utf8"));
      if (shown.code !== 0 || keys.length === 0)
        throw new KilnError("KEY_INVALID", "the input is not an OpenPGP key");
      if (keys.length > 1)
        throw new KilnError("KEY_INVALID", `the input holds ${keys.length} keys; give exactly one`, {
          fingerprints: keys.map((k) => k.fingerprint),
        });
      const key = keys[0] as ListedKey;
      if (key.type !== "sec")
        throw new KilnError("KEY_INVALID", "the input is a public key; the secret key is needed to sign", {
          fingerprint: key.fingerprint,
        });
      if (!canSign(key))
        throw new KilnError(
          "KEY_INVALID",
          "the key cannot sign (revoked, expired or without a signing key)",
          {
            fingerprint: key.fingerprint,
          },
        );
      const imported = await run(["--import"], armored);
      if (imported.code !== 0)
        throw new KilnError("KEY_INVALID", `gpg refused the key: ${lastLines(imported.stderr)}`, {
          fingerprint: key.fingerprint,
        });
      const probe = await run(
        ["--local-user", key.fingerprint, "--armor", "--output", "-", "--detach-sign"],
        "probe\n",
      );
      if (probe.code !== 0)
        throw new KilnError(
          "KEY_INVALID",
          `the key cannot sign here${/passphrase|batch ?mode/i.test(probe.stderr) ? ": it is protected by a passphrase; export it without one" : `: ${lastLines(probe.stderr)}`}`,
          { fingerprint: key.fingerprint },
        );
      return key.fingerprint;
    } finally {
      await this.run(this.gpgconfBin, ["--homedir", scratch, "--kill", "gpg-agent"]).catch(() => undefined);
      await rm(scratch, { recursive: true, force: true });
    }
  }

  private async findSecretKey(fpr: string): Promise<ListedKey | undefined> {
    const r = await this.gpg(["--with-colons", "--fixed-list-mode", "--list-secret-keys", fpr]);
    if (r.code !== 0) return undefined;
    return parseKeys(r.stdout.toString("utf8")).find((k) => k.fingerprint === fpr);
  }

  private async exportArmored(fpr: string): Promise<string> {
    const out = (await this.gpgOk(["--armor", "--export-options", "export-clean", "--export", fpr])).toString(
      "utf8",
    );
    if (!out.includes("BEGIN PGP PUBLIC KEY BLOCK"))
      throw new KilnError("KEY_UNAVAILABLE", `gpg exported nothing for ${fpr}`);
    return out;
  }

  private async readState(): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.stateFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const fpr = (JSON.parse(text) as { fingerprint?: unknown }).fingerprint;
    if (typeof fpr !== "string" || !/^[0-9A-F]{40,64}$/.test(fpr))
      throw new KilnError("KEY_UNAVAILABLE", `${this.stateFile} names no fingerprint`);
    return fpr;
  }

  private async writeState(fingerprint: string): Promise<void> {
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify({ fingerprint, since: new Date().toISOString() }, null, 2)}\n`);
    await rename(tmp, this.stateFile);
  }

  private async gpgOk(args: string[], input?: string): Promise<Buffer> {
    const r = await this.gpg(args, input);
    if (r.code !== 0) throw new KilnError("KEY_UNAVAILABLE", `gpg failed: ${lastLines(r.stderr)}`);
    return r.stdout;
  }

  private async gpg(args: string[], input?: string, home?: string): Promise<GpgResult> {
    const homedir = home ?? (await this.gpgHome());
    return this.run(
      this.gpgBin,
      [
        "--homedir",
        homedir,
        "--batch",
        "--no-tty",
        "--no-options",
        "--no-greeting",
        "--quiet",
        "--trust-model",
        "always",
        // A key with a passphrase fails at once instead of waiting for a pinentry.
        "--pinentry-mode",
        "loopback",
        ...args,
      ],
      input,
    );
  }

  private run(bin: string, args: string[], input?: string): Promise<GpgResult> {
    const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: "C", LANGUAGE: "C" };
    delete env.GNUPGHOME;
    delete env.GPG_AGENT_INFO;
    return new Promise((resolve, reject) => {
      const child = spawn(bin, args, { env, stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (c: Buffer) => out.push(c));
      child.stderr.on("data", (c: Buffer) => err.push(c));
      child.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          new KilnError(
            "KEY_UNAVAILABLE",
            e.code === "ENOENT"
              ? `${bin} is not installed (install gnupg)`
              : `cannot run ${bin}: ${e.message}`,
          ),
        ),
      );
      child.on("close", (code) =>
        resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString("utf8") }),
      );
      // gpg may exit before reading everything (garbage input): that is its answer, not ours.
      child.stdin.on("error", () => undefined);
      child.stdin.end(input ?? "");
    });
  }
}

/** A real directory (not a link) of ours that no one else may enter. */
async function isOwnPrivateDir(dir: string): Promise<boolean> {
  const st = await lstat(dir).catch(() => undefined);
  return !!st && st.isDirectory() && st.uid === (process.getuid?.() ?? st.uid) && (st.mode & 0o077) === 0;
}

/** Makes `dir` private and ours if missing; false if that name is someone else's. */
async function makeOwnPrivateDir(dir: string): Promise<boolean> {
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") return false;
  }
  return isOwnPrivateDir(dir);
}

function lastLines(stderr: string): string {
  const lines = stderr.trim().split("\n").filter(Boolean);
  return lines.slice(-3).join("; ") || "no message";
}

/** Makes sure `<dataDir>` has an archive key (generating one on first start) and describes it. */
export async function ensureArchiveKey(
  dataDir: string,
  opts: { uid?: string } = {},
): Promise<ArchiveKeyInfo> {
  const key = new ArchiveKey(dataDir, opts);
  try {
    return await key.ensure();
  } finally {
    await key.close();
  }
}
