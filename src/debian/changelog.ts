/**
 * debian/changelog (Debian policy §4.4), read the way dpkg-parsechangelog reads it, but every
 * problem it would warn about in the entries we return is an error here, with its line number.
 */
import { debianError, quote } from "./debian-error.js";
import { isValidPackageName, parseVersion } from "./version.js";

export interface ChangelogEntry {
  source: string;
  version: string;
  distributions: string[];
  /** The first word of the urgency, lowercased ("medium"); undefined when the header has none. */
  urgency: string | undefined;
  /** The `key=value` options of the header, keys capitalized as dpkg does (`Urgency`, `Binary-Only`). */
  options: Record<string, string>;
  /** The change lines as written (indented), blank lines at either end removed. */
  changes: string;
  /** `Name <email>` */
  maintainer: string;
  maintainerName: string;
  maintainerEmail: string;
  /** The date as written in the trailer. */
  date: string;
  /** The trailer date in seconds since the Unix epoch (what SOURCE_DATE_EPOCH wants). */
  timestamp: number;
  /** 1-based line of the header. */
  line: number;
}

export interface ParseChangelogOptions {
  /** Stop after this many entries (at least one), without reading the rest of the file. Default: all. */
  maxEntries?: number;
  /** Refuse a longer text (UTF-8 bytes). Default 16 MiB. */
  maxBytes?: number;
  /** Names the input in error messages. Default "debian/changelog". */
  source?: string;
}

const HEADER_RE = /^(\w[-+0-9a-z.]*) \(([^() \t]+)\)((?:\s+[-+0-9a-z.]+)+);(.*?)\s*$/i;
const TRAILER_RE =
  /^ -- (?<name>.*) <(?<email>.*)>(?<blanks> {1,2})(?<date>(?:(?<wday>\w+),\s*)?(?<day>\d{1,2})\s+(?<month>\w+)\s+(?<year>\d{4})\s+(?<hh>\d{1,2}):(?<mm>\d\d):(?<ss>\d\d)\s+(?<sign>[-+])(?<tzh>\d\d)(?<tzm>\d\d))\s*$/;
const OPTION_RE = /^([-0-9a-z]+)=\s*(.*\S)$/i;
const URGENCY_RE = /^([-0-9a-z]+)(\s+.*)?$/i;
const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// Lines after which dpkg stops reading entries: editor settings and the old formats of very old
// changelogs (Dpkg::Changelog::Debian's $ancient_delimiter_re, less the pattern that would hide a
// broken modern header).
const END_RES = [
  /^(?:;;\s*)?Local variables:/i,
  /^vim:/i,
  /^\w+\s+\w+\s+\d{1,2} \d{1,2}:\d{1,2}:\d{1,2}\s+[\w\s]*\d{4}\s+.*\s+[<(].*[)>]/i,
  /^\w+\s+\w+\s+\d{1,2},?\s*\d{4}\s+.*\s+[<(].*[)>]/i,
  /^[\w.+-]+[- ]\S+ Debian \S+/i,
  /^Changes from version .* to .*:/i,
  /^Changes for [\w.+-]+-[\w.+-]+:?\s*$/i,
  /^Old Changelog:\s*$/i,
  /^(?:\d+:)?\w[\w.+~-]*:?\s*$/i,
];
const SKIP_RES = [/^\$\w+:.*\$/, /^# /, /^\/\*.*\*\//];

type Expect =
  "first heading" | "start of change data" | "more change data or trailer" | "next heading or end of file";

/** The entries of a changelog, newest first. */
export function parseChangelog(text: string, options: ParseChangelogOptions = {}): ChangelogEntry[] {
  const source = options.source ?? "debian/changelog";
  const maxEntries = options.maxEntries ?? Infinity;
  const maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
  const fail: Fail = (line, message, text) => {
    const shown = text === undefined ? "" : `: ${quote(text, 100)}`;
    throw debianError("CHANGELOG_INVALID", `${source}, line ${line}: ${message}${shown}`, { line });
  };
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > maxBytes) {
    throw debianError("CHANGELOG_INVALID", `${source} is ${bytes} bytes, over the limit of ${maxBytes}`, {
      size: bytes,
      limit: maxBytes,
    });
  }

  const entries: ChangelogEntry[] = [];
  let expect: Expect = "first heading";
  let header: Omit<ChangelogEntry, "changes" | keyof Trailer> | undefined;
  let changes: string[] = [];
  let blanks: string[] = [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  let lineNo = 0;

  for (const raw of lines) {
    lineNo++;
    const line = raw.replace(/\r$/, "");
    if (HEADER_RE.test(line)) {
      if (expect !== "first heading" && expect !== "next heading or end of file") {
        fail(lineNo, `found a heading where expected ${expect}`, line);
      }
      header = parseHeader(line, lineNo, fail);
      changes = [];
      blanks = [];
      expect = "start of change data";
    } else if (SKIP_RES.some((re) => re.test(line))) {
      continue;
    } else if (/^\S/.test(line)) {
      if (expect === "next heading or end of file" && END_RES.some((re) => re.test(line))) break;
      fail(lineNo, "badly formatted heading line", line);
    } else if (line.startsWith(" --")) {
      const m = TRAILER_RE.exec(line);
      if (m === null)
        fail(
          lineNo,
          "badly formatted trailer line (want ' -- Name <email>  Day, DD Mon YYYY HH:MM:SS +ZZZZ')",
          line,
        );
      if (expect !== "more change data or trailer" || header === undefined) {
        fail(lineNo, `found a trailer where expected ${expect}`, line);
      }
      if (header !== undefined && m !== null) {
        entries.push({ ...header, changes: changes.join("\n"), ...parseTrailer(m, lineNo, fail) });
      }
      expect = "next heading or end of file";
      if (entries.length >= maxEntries) break;
    } else if (/^\s{2,}\S/.test(line)) {
      if (expect !== "start of change data" && expect !== "more change data or trailer") {
        fail(lineNo, `found change data where expected ${expect}`, line);
      }
      changes.push(...blanks, line.trimEnd());
      blanks = [];
      expect = "more change data or trailer";
    } else if (line.trim() === "") {
      if (expect === "more change data or trailer") blanks.push("");
    } else {
      fail(lineNo, "unrecognized line (change lines start with two spaces)", line);
    }
  }

  if (expect !== "next heading or end of file") {
    fail(lineNo + 1, `found the end of the file where expected ${expect}`);
  }
  return entries;
}

/** The newest entry: the source, version and distribution a build of this tree will have. */
export function parseLatestChangelogEntry(
  text: string,
  options: Omit<ParseChangelogOptions, "maxEntries"> = {},
): ChangelogEntry {
  const [entry] = parseChangelog(text, { ...options, maxEntries: 1 });
  if (entry === undefined)
    throw debianError("CHANGELOG_INVALID", `${options.source ?? "debian/changelog"} has no entries`);
  return entry;
}

type Fail = (line: number, message: string, text?: string) => never;

function parseHeader(
  line: string,
  lineNo: number,
  fail: Fail,
): Omit<ChangelogEntry, "changes" | keyof Trailer> {
  const m = HEADER_RE.exec(line);
  if (m === null) return fail(lineNo, "badly formatted heading line", line);
  const [, source = "", version = "", dists = "", rest = ""] = m;
  if (!isValidPackageName(source)) {
    fail(
      lineNo,
      `invalid source package name ${quote(source)} (lowercase letters, digits and '+-.', 2 or more)`,
    );
  }
  try {
    parseVersion(version);
  } catch (err) {
    fail(lineNo, (err as Error).message);
  }
  const options: Record<string, string> = {};
  let urgency: string | undefined;
  for (const opt of rest.trim().split(/\s*,\s*/)) {
    if (opt === "") continue;
    const o = OPTION_RE.exec(opt);
    if (o === null) return fail(lineNo, `bad key=value after ';'`, opt);
    const key = capitalizeField(o[1] ?? "");
    const value = o[2] ?? "";
    if (Object.hasOwn(options, key)) fail(lineNo, `repeated key ${key}`);
    options[key] = value;
    if (key === "Urgency") {
      const u = URGENCY_RE.exec(value);
      if (u === null) return fail(lineNo, "badly formatted urgency value", value);
      urgency = (u[1] ?? "").toLowerCase();
    } else if (key === "Binary-Only" && value !== "yes") {
      fail(lineNo, "binary-only must be 'yes'", value);
    }
  }
  return { source, version, distributions: dists.trim().split(/\s+/), urgency, options, line: lineNo };
}

interface Trailer {
  maintainer: string;
  maintainerName: string;
  maintainerEmail: string;
  date: string;
  timestamp: number;
}

function parseTrailer(m: RegExpExecArray, lineNo: number, fail: Fail): Trailer {
  const g = m.groups ?? {};
  const {
    name = "",
    email = "",
    date = "",
    wday,
    day = "",
    month = "",
    year = "",
    hh = "",
    mm = "",
    ss = "",
  } = g;
  const { sign = "+", tzh = "", tzm = "" } = g;
  if (name.trim() === "" || email.trim() === "")
    fail(lineNo, "the trailer needs a maintainer name and email");
  if (wday !== undefined && !WEEKDAYS.includes(wday)) fail(lineNo, `invalid week day ${quote(wday)}`);
  const monthIndex = MONTHS.indexOf(month);
  if (monthIndex < 0) fail(lineNo, `invalid month ${quote(month)} (want Jan, Feb, …)`);
  const utc = Date.UTC(Number(year), monthIndex, Number(day), Number(hh), Number(mm), Number(ss));
  const check = new Date(utc);
  if (
    check.getUTCDate() !== Number(day) ||
    check.getUTCHours() !== Number(hh) ||
    check.getUTCMinutes() !== Number(mm) ||
    Number(ss) > 60 ||
    Number(tzm) > 59
  ) {
    fail(lineNo, `invalid date ${quote(date)}`);
  }
  const offsetSeconds = (sign === "-" ? -1 : 1) * (Number(tzh) * 3600 + Number(tzm) * 60);
  return {
    maintainer: `${name} <${email}>`,
    maintainerName: name,
    maintainerEmail: email,
    date,
    timestamp: utc / 1000 - offsetSeconds,
  };
}

/** dpkg's field_capitalize(): `binary-only` → `Binary-Only`. */
function capitalizeField(key: string): string {
  return key
    .split("-")
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())
    .join("-");
}
