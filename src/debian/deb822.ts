/**
 * deb822 control data (deb822(5)): paragraphs of `Field: value` lines separated by blank lines,
 * as in debian/control, DEBIAN/control, Packages, Sources and Release files; and the relation
 * fields (Depends, Build-Depends, …) inside them.
 */
import { debianError, quote } from "./debian-error.js";
import {
  isRelationOp,
  isValidArchitecture,
  isValidPackageName,
  isValidVersion,
  type RelationOp,
} from "./version.js";

export interface Deb822Field {
  /** As written in the source: lookups ignore case, output keeps it. */
  readonly name: string;
  /**
   * The first line trimmed; each continuation line follows a "\n" without the single leading
   * space or tab that marks it as a continuation, trailing whitespace removed. So
   * `Description: short\n long\n .\n more` has the value "short\nlong\n.\nmore".
   */
  readonly value: string;
  /** 1-based line of the field's first line. */
  readonly line: number;
}

export interface Paragraph {
  /** In source order; names unique regardless of case. */
  readonly fields: readonly Deb822Field[];
  /** 1-based line where the paragraph starts. */
  readonly line: number;
}

export interface Deb822Limits {
  /** Size of the whole text, in UTF-8 bytes. */
  maxBytes: number;
  maxParagraphs: number;
  maxFieldsPerParagraph: number;
}

export const DEFAULT_DEB822_LIMITS: Readonly<Deb822Limits> = {
  maxBytes: 64 * 1024 * 1024,
  maxParagraphs: 1_000_000,
  maxFieldsPerParagraph: 1000,
};

export interface ParseDeb822Options {
  limits?: Partial<Deb822Limits>;
  /** Skip lines starting with `#` (debian/control allows them anywhere). Default true. */
  comments?: boolean;
  /** Names the input in error messages, e.g. "debian/control". */
  source?: string;
}

// deb822(5): printable US-ASCII except space and colon, not starting with `#` or `-`.
const FIELD_NAME_RE = /^[!-"$-,.-9;-~][!-9;-~]*$/;
const FIELD_LINE_RE = /^([^\s:]+):([^]*)$/;
const BLANK_RE = /^[ \t\r]*$/;

export function isValidFieldName(name: string): boolean {
  return FIELD_NAME_RE.test(name);
}

/** All paragraphs of a deb822 text. Errors name the line. */
export function parseDeb822(text: string, options: ParseDeb822Options = {}): Paragraph[] {
  const limits = { ...DEFAULT_DEB822_LIMITS, ...options.limits };
  const comments = options.comments ?? true;
  const source = options.source ?? "control data";
  const fail: (line: number, message: string) => never = (line, message) => {
    throw debianError("CONTROL_INVALID", `${source}, line ${line}: ${message}`, { line });
  };

  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > limits.maxBytes) {
    throw debianError(
      "CONTROL_INVALID",
      `${source} is ${bytes} bytes, over the limit of ${limits.maxBytes}`,
      {
        size: bytes,
        limit: limits.maxBytes,
      },
    );
  }

  const paragraphs: Paragraph[] = [];
  let fields: Deb822Field[] = [];
  let seen = new Map<string, number>();
  let start = 0;
  let lines: string[] = []; // lines of the field being read

  const flushField = (): void => {
    const last = fields[fields.length - 1];
    if (last && lines.length > 1) fields[fields.length - 1] = { ...last, value: lines.join("\n") };
    lines = [];
  };
  const flushParagraph = (): void => {
    flushField();
    if (fields.length === 0) return;
    if (paragraphs.length >= limits.maxParagraphs) {
      fail(start, `more than ${limits.maxParagraphs} paragraphs`);
    }
    paragraphs.push({ fields, line: start });
    fields = [];
    seen = new Map();
  };

  const all = text.split("\n");
  if (all[all.length - 1] === "") all.pop();
  for (let i = 0; i < all.length; i++) {
    const raw = (all[i] ?? "").replace(/\r$/, "");
    const lineNo = i + 1;
    if (comments && raw.startsWith("#")) continue;
    if (BLANK_RE.test(raw)) {
      flushParagraph();
      continue;
    }
    if (raw.startsWith(" ") || raw.startsWith("\t")) {
      if (fields.length === 0)
        fail(lineNo, "a continuation line (starting with whitespace) comes before any field");
      lines.push(trimEnd(raw.slice(1)));
      continue;
    }
    const m = FIELD_LINE_RE.exec(raw);
    const name = m?.[1];
    if (m === null || name === undefined) {
      return fail(lineNo, `expected "Field: value", got ${quote(trimEnd(raw), 60)}`);
    }
    if (!isValidFieldName(name)) fail(lineNo, `invalid field name ${quote(name)}`);
    flushField();
    if (fields.length === 0) start = lineNo;
    const key = name.toLowerCase();
    const first = seen.get(key);
    if (first !== undefined) fail(lineNo, `duplicate field ${quote(name)} (first on line ${first})`);
    if (fields.length >= limits.maxFieldsPerParagraph) {
      fail(lineNo, `more than ${limits.maxFieldsPerParagraph} fields in one paragraph`);
    }
    seen.set(key, lineNo);
    const value = (m[2] ?? "").replace(/^[ \t]+/, "");
    lines = [trimEnd(value)];
    fields.push({ name, value: lines[0] ?? "", line: lineNo });
  }
  flushParagraph();
  return paragraphs;
}

/** Exactly one paragraph, as in a binary package's control file. */
export function parseParagraph(text: string, options: ParseDeb822Options = {}): Paragraph {
  const paragraphs = parseDeb822(text, { ...options, limits: { ...options.limits, maxParagraphs: 2 } });
  const source = options.source ?? "control data";
  const [first, second] = paragraphs;
  if (first === undefined) throw debianError("CONTROL_INVALID", `${source} is empty`);
  if (second !== undefined) {
    throw debianError(
      "CONTROL_INVALID",
      `${source}, line ${second.line}: expected one paragraph, found another`,
      {
        line: second.line,
      },
    );
  }
  return first;
}

function trimEnd(s: string): string {
  return s.replace(/[ \t\r]+$/, "");
}

/** The value of a field, whatever the case of its name. */
export function getField(paragraph: Paragraph, name: string): string | undefined {
  const key = name.toLowerCase();
  return paragraph.fields.find((f) => f.name.toLowerCase() === key)?.value;
}

/** Like getField(), but a missing or empty field is an error. */
export function requireField(paragraph: Paragraph, name: string, source = "control data"): string {
  const value = getField(paragraph, name);
  if (value === undefined || value === "") {
    throw debianError("CONTROL_INVALID", `${source}: missing required field ${name}`, {
      field: name,
      line: paragraph.line,
    });
  }
  return value;
}

/** The fields as a plain object keyed by their names as written. */
export function paragraphToRecord(paragraph: Paragraph): Record<string, string> {
  return Object.fromEntries(paragraph.fields.map((f) => [f.name, f.value]));
}

export type FieldsInput = Paragraph | Readonly<Record<string, string>> | Iterable<readonly [string, string]>;

function entriesOf(input: FieldsInput): Array<readonly [string, string]> {
  if (isParagraph(input)) return input.fields.map((f) => [f.name, f.value] as const);
  if (Symbol.iterator in input) return [...(input as Iterable<readonly [string, string]>)];
  return Object.entries(input);
}

function isParagraph(input: FieldsInput): input is Paragraph {
  return Array.isArray((input as Partial<Paragraph>).fields);
}

/**
 * One paragraph in canonical form, ending in "\n": the fields named in `order` first, in that
 * order (names match regardless of case), then the others as given. Values use the same shape
 * parseDeb822() returns, so parsing the output gives the fields back; whitespace at line ends is
 * dropped, and a value with an empty continuation line (which would end the paragraph) is refused.
 */
export function formatParagraph(fields: FieldsInput, order: readonly string[] = []): string {
  const entries = entriesOf(fields);
  const seen = new Set<string>();
  for (const [name] of entries) {
    if (!isValidFieldName(name)) throw debianError("CONTROL_INVALID", `Invalid field name ${quote(name)}`);
    const key = name.toLowerCase();
    if (seen.has(key)) throw debianError("CONTROL_INVALID", `Duplicate field ${quote(name)}`);
    seen.add(key);
  }
  const rank = new Map(order.map((name, i) => [name.toLowerCase(), i]));
  const sorted = entries
    .map((entry, i) => ({ entry, key: rank.get(entry[0].toLowerCase()) ?? order.length + i }))
    .sort((a, b) => a.key - b.key);

  let out = "";
  for (const { entry } of sorted) {
    const [name, value] = entry;
    const [first = "", ...rest] = value.split("\n");
    const head = first.replace(/^[ \t]+/, "").replace(/[ \t\r]+$/, "");
    out += head === "" ? `${name}:` : `${name}: ${head}`;
    for (const line of rest) {
      const body = trimEnd(line);
      if (body.trim() === "") {
        throw debianError(
          "CONTROL_INVALID",
          `Field ${name} has an empty continuation line; write "." for an empty line in a description`,
        );
      }
      out += `\n ${body}`;
    }
    out += "\n";
  }
  return out;
}

/** Several paragraphs separated by blank lines, as in a Packages file. */
export function formatDeb822(paragraphs: Iterable<FieldsInput>, order: readonly string[] = []): string {
  return [...paragraphs].map((p) => formatParagraph(p, order)).join("\n");
}

/** Field order of Packages files, as apt-ftparchive writes them (apt's tagfile-order.c). */
export const PACKAGES_FIELD_ORDER: readonly string[] = [
  "Package",
  "Package-Type",
  "Architecture",
  "Subarchitecture",
  "Version",
  "Kernel-Version",
  "Built-Using",
  "Static-Built-Using",
  "Built-For-Profiles",
  "Auto-Built-Package",
  "Multi-Arch",
  "Status",
  "Priority",
  "Essential",
  "Protected",
  "Installer-Menu-Item",
  "Section",
  "Source",
  "Origin",
  "Maintainer",
  "Original-Maintainer",
  "Bugs",
  "Config-Version",
  "Conffiles",
  "Triggers-Awaited",
  "Triggers-Pending",
  "Installed-Size",
  "Provides",
  "Pre-Depends",
  "Depends",
  "Recommends",
  "Suggests",
  "Conflicts",
  "Breaks",
  "Replaces",
  "Enhances",
  "Filename",
  "Size",
  "MD5sum",
  "SHA1",
  "SHA256",
  "SHA512",
  "Homepage",
  "Description",
  "Tag",
  "Task",
];

/** Field order of Sources files (apt's tagfile-order.c); a .dsc's Source becomes Package. */
export const SOURCES_FIELD_ORDER: readonly string[] = [
  "Package",
  "Source",
  "Format",
  "Binary",
  "Architecture",
  "Version",
  "Priority",
  "Section",
  "Origin",
  "Maintainer",
  "Original-Maintainer",
  "Uploaders",
  "Standards-Version",
  "Build-Depends",
  "Build-Depends-Arch",
  "Build-Depends-Indep",
  "Build-Conflicts",
  "Build-Conflicts-Arch",
  "Build-Conflicts-Indep",
  "Testsuite",
  "Testsuite-Triggers",
  "Homepage",
  "Vcs-Browser",
  "Vcs-Arch",
  "Vcs-Bzr",
  "Vcs-Cvs",
  "Vcs-Darcs",
  "Vcs-Git",
  "Vcs-Hg",
  "Vcs-Mtn",
  "Vcs-Svn",
  "Directory",
  "Package-List",
  "Files",
  "Checksums-Md5",
  "Checksums-Sha1",
  "Checksums-Sha256",
  "Checksums-Sha512",
];

// ---------------------------------------------------------------------------------------------
// Relation fields

export interface Relation {
  name: string;
  /** After `name:` — `any`, `native` or an architecture. */
  archQualifier?: string;
  version?: { op: RelationOp; version: string };
  /** `[amd64 arm64]` or `[!i386 !armel]`: never a mix. */
  architectures?: { negated: boolean; names: string[] };
  /**
   * Build profiles: each `<…>` is one list whose terms must all hold; the relation applies when
   * any list holds. `<!nocheck> <stage1 cross>` → [[!nocheck], [stage1, cross]].
   */
  restrictions?: RestrictionTerm[][];
}

export interface RestrictionTerm {
  name: string;
  negated: boolean;
}

/** Each element is one comma-separated group; the relations in it are `|` alternatives. */
export type Dependencies = Relation[][];

const RELATION_RE =
  /^([^\s:([<]+)(?::([^\s([<]+))?(?:\s*\(\s*(<<|<=|>=|>>|=|<|>)\s*([^)\s]+)\s*\))?(?:\s*\[([^\]]*)\])?((?:\s*<[^>]*>)*)$/;
const PROFILE_RE = /^[a-z0-9][a-z0-9.+-]*$/;

/**
 * Parses a relation field such as `a (>= 1.0) [amd64] <!nocheck> | b, c:any`. Whitespace
 * (newlines included) may appear between tokens; empty groups (a trailing comma) are skipped, as
 * dpkg-source does. Substitution variables (`${misc:Depends}`) must be replaced first.
 */
export function parseDependencies(field: string, fieldName = "relation field"): Dependencies {
  const fail: (message: string) => never = (message) => {
    throw debianError("DEPENDS_INVALID", `${fieldName}: ${message}`, { field: fieldName });
  };
  const groups: Dependencies = [];
  for (const groupText of field.split(",")) {
    if (groupText.trim() === "") continue;
    const group: Relation[] = [];
    for (const altText of groupText.split("|")) {
      const text = altText.trim();
      if (text === "") fail(`empty alternative in ${quote(groupText.trim())}`);
      group.push(parseRelation(text, fail));
    }
    groups.push(group);
  }
  return groups;
}

function parseRelation(text: string, fail: (message: string) => never): Relation {
  if (text.includes("${")) fail(`substitution variables must be replaced first: ${quote(text)}`);
  const m = RELATION_RE.exec(text);
  if (m === null) return fail(`cannot parse ${quote(text)}`);
  const [, name = "", qualifier, op, version, archText, restrictionText] = m;
  if (!isValidPackageName(name)) fail(`invalid package name ${quote(name)} in ${quote(text)}`);
  const relation: Relation = { name };
  if (qualifier !== undefined) {
    if (!isValidArchitecture(qualifier))
      fail(`invalid architecture qualifier ${quote(qualifier)} in ${quote(text)}`);
    relation.archQualifier = qualifier;
  }
  if (op !== undefined && version !== undefined) {
    if (!isRelationOp(op)) fail(`invalid operator in ${quote(text)}`);
    if (!isValidVersion(version)) fail(`invalid version ${quote(version)} in ${quote(text)}`);
    relation.version = { op, version };
  }
  if (archText !== undefined) {
    const terms = archText.trim().split(/\s+/).filter(Boolean);
    if (terms.length === 0) fail(`empty architecture list in ${quote(text)}`);
    const negated = terms[0]?.startsWith("!") ?? false;
    const names: string[] = [];
    for (const term of terms) {
      if (term.startsWith("!") !== negated)
        fail(`architecture list mixes negated and plain names in ${quote(text)}`);
      const arch = negated ? term.slice(1) : term;
      if (!isValidArchitecture(arch)) fail(`invalid architecture ${quote(arch)} in ${quote(text)}`);
      names.push(arch);
    }
    relation.architectures = { negated, names };
  }
  if (restrictionText !== undefined && restrictionText.trim() !== "") {
    const lists: RestrictionTerm[][] = [];
    for (const block of restrictionText.matchAll(/<([^>]*)>/g)) {
      const terms = (block[1] ?? "").trim().split(/\s+/).filter(Boolean);
      if (terms.length === 0) fail(`empty restriction list in ${quote(text)}`);
      lists.push(
        terms.map((term) => {
          const negated = term.startsWith("!");
          const profile = negated ? term.slice(1) : term;
          if (!PROFILE_RE.test(profile)) fail(`invalid build profile ${quote(profile)} in ${quote(text)}`);
          return { name: profile, negated };
        }),
      );
    }
    relation.restrictions = lists;
  }
  return relation;
}

/** The canonical spelling of parsed relations: `a (>= 1.0) [amd64] <!nocheck> | b, c:any`. */
export function formatDependencies(deps: Dependencies): string {
  return deps.map((group) => group.map(formatRelation).join(" | ")).join(", ");
}

function formatRelation(r: Relation): string {
  let out = r.name;
  if (r.archQualifier !== undefined) out += `:${r.archQualifier}`;
  if (r.version) out += ` (${r.version.op} ${r.version.version})`;
  if (r.architectures) {
    const bang = r.architectures.negated ? "!" : "";
    out += ` [${r.architectures.names.map((a) => bang + a).join(" ")}]`;
  }
  for (const list of r.restrictions ?? []) {
    out += ` <${list.map((t) => (t.negated ? "!" : "") + t.name).join(" ")}>`;
  }
  return out;
}
