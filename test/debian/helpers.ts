/** Fixtures for the Debian format tests: tools, temp dirs, and hand-made ar/tar archives. */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { expect } from "vitest";
import { debianErrorCode } from "../../src/debian/debian-error.js";

/** Is `tool` on PATH? In CI (CI=true) a missing tool fails the run instead of skipping tests. */
export function haveTool(tool: string): boolean {
  const found = spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status === 0;
  if (!found && process.env.CI === "true") throw new Error(`${tool} is required in CI`);
  if (!found) console.warn(`skipping tests that need ${tool}: it is not installed`);
  return found;
}

export function makeTempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), "kiln-debian-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; input?: string | Buffer } = {},
): string {
  return execFileSync(cmd, args, {
    cwd: options.cwd,
    input: options.input,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
}

/** Asserts that `action` fails with the given Debian error code (catalogue code or details.reason). */
export async function expectDebianError(
  action: (() => unknown) | Promise<unknown>,
  code: string,
): Promise<Error> {
  let error: unknown;
  try {
    await (typeof action === "function" ? action() : action);
  } catch (err) {
    error = err;
  }
  expect(error, `expected an error with code ${code}`).toBeInstanceOf(Error);
  expect(debianErrorCode(error), (error as Error).message).toBe(code);
  return error as Error;
}

export function expectDebianErrorSync(action: () => unknown, code: string): Error {
  let error: unknown;
  try {
    action();
  } catch (err) {
    error = err;
  }
  expect(error, `expected an error with code ${code}`).toBeInstanceOf(Error);
  expect(debianErrorCode(error), (error as Error).message).toBe(code);
  return error as Error;
}

// ---------------------------------------------------------------------------------------------
// A small tar writer, to craft archives real tools refuse to make.

export interface TarSpec {
  path: string;
  /** The typeflag: "0" file (default), "1" hard link, "2" symlink, "5" directory, "x" pax, "L" GNU long name… */
  type?: string;
  content?: Buffer | string;
  linkTarget?: string;
  mode?: number;
  /** Overrides the size written in the header (to lie about it). */
  size?: number;
  /** "gnu" (default) or "ustar" magic; "ustar" splits long paths into prefix/name. */
  format?: "gnu" | "ustar";
}

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, "0") + "\0";
}

export function tarHeader(spec: TarSpec): Buffer {
  const h = Buffer.alloc(512);
  const content = Buffer.from(spec.content ?? "");
  let name = spec.path;
  let prefix = "";
  if (spec.format === "ustar" && Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", name.length - 1);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  h.write(name, 0, 100, "utf8");
  h.write(octal(spec.mode ?? 0o644, 8), 100, "latin1");
  h.write(octal(0, 8), 108, "latin1");
  h.write(octal(0, 8), 116, "latin1");
  h.write(octal(spec.size ?? content.length, 12), 124, "latin1");
  h.write(octal(1_700_000_000, 12), 136, "latin1");
  h.write(spec.type ?? "0", 156, "latin1");
  h.write(spec.linkTarget ?? "", 157, 100, "utf8");
  if (spec.format === "ustar") {
    h.write("ustar\0" + "00", 257, "latin1");
    h.write(prefix, 345, 155, "utf8");
  } else {
    h.write("ustar  \0", 257, "latin1");
  }
  h.write("root", 265, "latin1");
  h.write("root", 297, "latin1");
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
  return h;
}

function pad(data: Buffer): Buffer {
  const rest = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(rest)]);
}

export function paxRecords(records: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of Object.entries(records)) {
    const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from("\n")]);
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    parts.push(Buffer.concat([Buffer.from(String(length)), body]));
  }
  return Buffer.concat(parts);
}

/** A tar archive of the given entries, ending in two zero blocks unless `end` is false. */
export function makeTar(entries: TarSpec[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const spec of entries) {
    parts.push(tarHeader(spec));
    const content = Buffer.from(spec.content ?? "");
    if (content.length > 0) parts.push(pad(content));
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// A small ar writer and .deb assembler.

export interface ArSpec {
  name: string;
  data: Buffer | string;
}

export function arHeader(name: string, size: number): Buffer {
  const field = (s: string, n: number) => s.padEnd(n, " ").slice(0, n);
  return Buffer.from(
    field(name, 16) +
      field("0", 12) +
      field("0", 6) +
      field("0", 6) +
      field("100644", 8) +
      field(String(size), 10) +
      "`\n",
    "latin1",
  );
}

export function makeAr(members: ArSpec[]): Buffer {
  const parts: Buffer[] = [Buffer.from("!<arch>\n")];
  for (const m of members) {
    const data = Buffer.from(m.data);
    parts.push(arHeader(m.name, data.length), data);
    if (data.length % 2 === 1) parts.push(Buffer.from("\n"));
  }
  return Buffer.concat(parts);
}

export const GOOD_CONTROL =
  "Package: hello\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: A <a@example.org>\nDescription: hi\n says hello\n";

/** A .deb assembled by hand: gzip'd control and data members unless given raw. */
export function makeDeb(
  opts: {
    control?: TarSpec[];
    data?: TarSpec[];
    binary?: string;
    controlMember?: ArSpec;
    dataMember?: ArSpec;
  } = {},
): Buffer {
  const control = opts.control ?? [{ path: "./control", content: GOOD_CONTROL }];
  const data = opts.data ?? [{ path: "./", type: "5", mode: 0o755 }];
  return makeAr([
    { name: "debian-binary", data: opts.binary ?? "2.0\n" },
    opts.controlMember ?? { name: "control.tar.gz", data: zlib.gzipSync(makeTar(control)) },
    opts.dataMember ?? { name: "data.tar.gz", data: zlib.gzipSync(makeTar(data)) },
  ]);
}

const ZEROS = Buffer.alloc(1024 * 1024);

/** gzip of `head` then `megabytes` MiB of zeros, made in a stream without ever holding the zeros. */
export async function gzipZeros(megabytes: number, head?: Buffer): Promise<Buffer> {
  function* parts(): Generator<Buffer> {
    if (head) yield head;
    for (let i = 0; i < megabytes; i++) yield ZEROS;
  }
  const out: Buffer[] = [];
  for await (const chunk of Readable.from(parts()).pipe(zlib.createGzip({ level: 1 })))
    out.push(chunk as Buffer);
  return Buffer.concat(out);
}
