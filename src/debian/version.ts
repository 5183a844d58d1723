/**
 * Debian version numbers, package names and architecture names: parsing, validation and
 * comparison with exactly dpkg's rules (lib/dpkg/version.c).
 */
import { debianError, quote } from "./debian-error.js";

export interface DebianVersion {
  /** 0 when the version has no epoch (`1.0` and `0:1.0` are the same version). */
  epoch: number;
  upstream: string;
  /** "" when the version has no Debian revision. */
  revision: string;
}

/** Relation operators of dependency fields; `<` and `>` are the obsolete spellings of `<=` and `>=`. */
export type RelationOp = "<<" | "<=" | "=" | ">=" | ">>" | "<" | ">";

export const RELATION_OPS: readonly RelationOp[] = ["<<", "<=", "=", ">=", ">>", "<", ">"];

const MAX_EPOCH = 2 ** 31 - 1; // dpkg keeps the epoch in an int
const UPSTREAM_RE = /^[0-9][A-Za-z0-9.+~-]*$/;
const REVISION_RE = /^[A-Za-z0-9.+~]+$/;
const PACKAGE_NAME_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const ARCHITECTURE_RE = /^[a-z0-9][a-z0-9-]*$/;

/**
 * Parses `[epoch:]upstream[-revision]` as Debian policy §5.6.12 allows it: the epoch is a small
 * unsigned integer, the upstream version starts with a digit and holds only alphanumerics and
 * `. + ~ -` (a hyphen only when there is a revision), the revision holds only alphanumerics and
 * `. + ~`. Stricter than dpkg, which merely warns about some of these (and still allows `:` in
 * the upstream part); whitespace anywhere is refused.
 */
export function parseVersion(version: string): DebianVersion {
  const problem = findVersionProblem(version);
  if (problem !== undefined) {
    throw debianError("INVALID_VERSION", `Invalid version ${quote(version)}: ${problem}`, { version });
  }
  return splitVersion(version);
}

export function isValidVersion(version: string): boolean {
  return findVersionProblem(version) === undefined;
}

/** The canonical spelling: no `0:` epoch, no empty revision. */
export function formatVersion(v: DebianVersion): string {
  return `${v.epoch > 0 ? `${v.epoch}:` : ""}${v.upstream}${v.revision ? `-${v.revision}` : ""}`;
}

function splitVersion(version: string): DebianVersion {
  const colon = version.indexOf(":");
  const epoch = colon >= 0 ? Number(version.slice(0, colon)) : 0;
  const rest = colon >= 0 ? version.slice(colon + 1) : version;
  const hyphen = rest.lastIndexOf("-");
  return hyphen >= 0
    ? { epoch, upstream: rest.slice(0, hyphen), revision: rest.slice(hyphen + 1) }
    : { epoch, upstream: rest, revision: "" };
}

function findVersionProblem(version: string): string | undefined {
  if (version === "") return "it is empty";
  if (/\s/.test(version)) return "it contains whitespace";
  const colon = version.indexOf(":");
  let rest = version;
  if (colon >= 0) {
    const epoch = version.slice(0, colon);
    if (epoch === "") return "the epoch before ':' is empty";
    if (!/^[0-9]+$/.test(epoch)) return "the epoch is not a number";
    if (Number(epoch) > MAX_EPOCH) return "the epoch is too big";
    rest = version.slice(colon + 1);
  }
  const hyphen = rest.lastIndexOf("-");
  const upstream = hyphen >= 0 ? rest.slice(0, hyphen) : rest;
  if (hyphen >= 0) {
    const revision = rest.slice(hyphen + 1);
    if (revision === "") return "the revision after '-' is empty";
    if (!REVISION_RE.test(revision)) return "the revision may hold only letters, digits and '.+~'";
  }
  if (upstream === "") return "the upstream version is empty";
  if (!/^[0-9]/.test(upstream)) return "the upstream version must start with a digit";
  if (!UPSTREAM_RE.test(upstream)) return "the upstream version may hold only letters, digits and '.+~-'";
  return undefined;
}

/** dpkg's order: -1 when a is older than b, 0 when they are the same version, 1 when newer. */
export function compareVersions(a: string | DebianVersion, b: string | DebianVersion): -1 | 0 | 1 {
  const va = typeof a === "string" ? parseVersion(a) : a;
  const vb = typeof b === "string" ? parseVersion(b) : b;
  const diff =
    va.epoch !== vb.epoch
      ? va.epoch - vb.epoch
      : compareFragments(va.upstream, vb.upstream) || compareFragments(va.revision, vb.revision);
  return diff < 0 ? -1 : diff > 0 ? 1 : 0;
}

/** Does `version` satisfy the relation `(op ref)`, as in `Depends: pkg (op ref)`? */
export function satisfies(
  version: string | DebianVersion,
  op: RelationOp,
  ref: string | DebianVersion,
): boolean {
  const c = compareVersions(version, ref);
  switch (op) {
    case "<<":
      return c < 0;
    case "<=":
    case "<":
      return c <= 0;
    case "=":
      return c === 0;
    case ">=":
    case ">":
      return c >= 0;
    case ">>":
      return c > 0;
  }
}

export function isRelationOp(op: string): op is RelationOp {
  return (RELATION_OPS as readonly string[]).includes(op);
}

const CH_0 = 0x30;
const CH_9 = 0x39;
const CH_TILDE = 0x7e;

function charAt(s: string, i: number): number {
  return i < s.length ? s.charCodeAt(i) : 0;
}

function isDigit(c: number): boolean {
  return c >= CH_0 && c <= CH_9;
}

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** Sort weight of a non-digit character: `~` before the end, the end before letters, letters before the rest. */
function order(c: number): number {
  if (isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === CH_TILDE) return -1;
  if (c !== 0) return c + 256;
  return 0;
}

/**
 * dpkg's verrevcmp(): alternate runs of non-digits (compared by `order`) and digits (compared
 * as numbers, but digit by digit, so numbers of any length compare exactly).
 */
function compareFragments(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    while ((i < a.length && !isDigit(charAt(a, i))) || (j < b.length && !isDigit(charAt(b, j)))) {
      const diff = order(charAt(a, i)) - order(charAt(b, j));
      if (diff !== 0) return diff;
      i++;
      j++;
    }
    while (charAt(a, i) === CH_0) i++;
    while (charAt(b, j) === CH_0) j++;
    let firstDiff = 0;
    while (isDigit(charAt(a, i)) && isDigit(charAt(b, j))) {
      if (firstDiff === 0) firstDiff = charAt(a, i) - charAt(b, j);
      i++;
      j++;
    }
    if (isDigit(charAt(a, i))) return 1;
    if (isDigit(charAt(b, j))) return -1;
    if (firstDiff !== 0) return firstDiff;
  }
  return 0;
}

/** Policy §5.6.1: lowercase letters, digits, `+ - .`; at least two characters; starts alphanumeric. */
export function isValidPackageName(name: string): boolean {
  return PACKAGE_NAME_RE.test(name);
}

export function assertValidPackageName(name: string, what = "package name"): string {
  if (!isValidPackageName(name)) {
    throw debianError(
      "INVALID_PACKAGE_NAME",
      `Invalid ${what} ${quote(name)}: use at least two of lowercase letters, digits and '+-.', starting with a letter or digit`,
      { name },
    );
  }
  return name;
}

/**
 * An architecture name as dpkg accepts it (`amd64`, `all`, `any`, `linux-any`, `hurd-i386`):
 * lowercase letters, digits and hyphens, starting with a letter or digit.
 */
export function isValidArchitecture(arch: string): boolean {
  return ARCHITECTURE_RE.test(arch);
}

export function assertValidArchitecture(arch: string): string {
  if (!isValidArchitecture(arch)) {
    throw debianError(
      "INVALID_ARCHITECTURE",
      `Invalid architecture ${quote(arch)}: use lowercase letters, digits and '-', starting with a letter or digit`,
      { architecture: arch },
    );
  }
  return arch;
}
