/**
 * Aptly's package query language (https://www.aptly.info/doc/feature/query/), so filters written
 * for Aptly (`repo remove`, `snapshot pull`, mirror filters, API `q=`) select the same packages
 * in Kiln:
 *
 *   query     := and ('|' and)*          lowest precedence
 *   and       := not (',' not)*
 *   not       := '!' not | primary
 *   primary   := '(' query ')' | term
 *   term      := name [condition] ['{' arch '}']   a package (or what it Provides)
 *              | Field [condition]                 a control field, or $Source, $Version…
 *              | name_version_arch                 one exact package
 *   condition := '(' [op] value ')'               op: << < <= = >= > >> % ~ (default =)
 *
 * A term is a field query when it starts with `$` or an uppercase letter and has no `_`.
 * Values may be quoted with '…' or "…" (backslash escapes the next character).
 */
import { KilnError } from "../errors/catalogue.js";
import { quote } from "./debian-error.js";
import { isValidFieldName } from "./deb822.js";
import { compareVersions, isValidArchitecture, isValidPackageName, isValidVersion } from "./version.js";

/** `<` and `>` are read as `<=` and `>=`, as Aptly (and old dpkg) does. */
export type QueryOp = "<<" | "<=" | "=" | ">=" | ">>" | "%" | "~";

export interface QueryCondition {
  readonly op: QueryOp;
  readonly value: string;
}

export interface OrQuery {
  readonly kind: "or";
  readonly terms: readonly PackageQuery[];
}
export interface AndQuery {
  readonly kind: "and";
  readonly terms: readonly PackageQuery[];
}
export interface NotQuery {
  readonly kind: "not";
  readonly term: PackageQuery;
}
/** `nginx`, `nginx (>= 1.2)`, `nginx {amd64}`: like a dependency. */
export interface PackageTermQuery {
  readonly kind: "package";
  readonly name: string;
  readonly condition?: QueryCondition;
  readonly architecture?: string;
}
/** `Priority (optional)`, `$Source (nginx)`, `Name (~ .*-dev)`, `Essential` (field present). */
export interface FieldQuery {
  readonly kind: "field";
  readonly field: string;
  readonly condition?: QueryCondition;
}
/** `nginx_1.2-1_amd64`: exactly that package (version compared as a string, as Aptly does). */
export interface RefQuery {
  readonly kind: "ref";
  readonly name: string;
  readonly version: string;
  readonly architecture: string;
}

/** A parsed query: plain data (JSON-serialisable); matchesQuery() compiles patterns lazily. */
export type PackageQuery = OrQuery | AndQuery | NotQuery | PackageTermQuery | FieldQuery | RefQuery;

/** What a query looks at in a package. */
export interface QueryTarget {
  name: string;
  version: string;
  /** The package's architecture; "source" for a source package. */
  architecture: string;
  /** "deb" | "udeb" | "source" */
  packageType: string;
  /** The source package's name (the Source field without its version, or the name). */
  source: string;
  /** any control field, case-insensitive */
  field(name: string): string | undefined;
}

/** The `$` fields Aptly knows; any other `$` name is refused rather than silently matching nothing. */
const SPECIAL_FIELDS = new Set(["$Source", "$SourceVersion", "$Architecture", "$Version", "$PackageType"]);

// Aptly joins these from its parsed lists, so multi-line values compare as one line.
const RELATION_FIELDS = new Set([
  "depends",
  "pre-depends",
  "suggests",
  "recommends",
  "provides",
  "build-depends",
  "build-depends-indep",
]);

// ---------------------------------------------------------------------------------------------
// Lexer

type TokenType = "(" | ")" | "{" | "}" | "|" | "," | "!" | "op" | "string" | "eof";

interface Token {
  type: TokenType;
  value: string;
  /** 0-based offset in the query text. */
  start: number;
}

// Characters that end an unquoted string. Aptly (by a quirk) lets `(` continue one; Kiln ends it,
// so `nginx(>= 1)` reads as `nginx (>= 1)` instead of failing.
const STRING_STOP = new Set(["(", ")", "|", ",", "!", "{", "}"]);

function isSpace(c: string): boolean {
  return /\s/.test(c);
}

function invalid(text: string, offset: number, message: string, expected?: string): KilnError {
  return new KilnError(
    "QUERY_INVALID",
    `Package query ${quote(text)}: ${message} at position ${offset + 1}`,
    {
      query: text,
      position: offset + 1,
      ...(expected !== undefined ? { expected } : {}),
    },
  );
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] ?? "";
    const start = i;
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (c === "(" || c === ")" || c === "{" || c === "}" || c === "|" || c === "," || c === "!") {
      tokens.push({ type: c, value: c, start });
      i++;
      continue;
    }
    if (c === "<" || c === ">") {
      const next = text[i + 1];
      const strict = next === c;
      i += strict || next === "=" ? 2 : 1;
      tokens.push({ type: "op", value: strict ? c + c : `${c}=`, start });
      continue;
    }
    if (c === "=" || c === "%" || c === "~") {
      tokens.push({ type: "op", value: c, start });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      let value = "";
      i++;
      for (;;) {
        if (i >= text.length) throw invalid(text, start, "unterminated quoted string", `closing ${c}`);
        let ch = text[i] ?? "";
        i++;
        if (ch === c) break;
        if (ch === "\\") {
          if (i >= text.length) throw invalid(text, start, "unterminated quoted string", `closing ${c}`);
          ch = text[i] ?? "";
          i++;
        }
        value += ch;
      }
      tokens.push({ type: "string", value, start });
      continue;
    }
    while (i < text.length && !isSpace(text[i] ?? "") && !STRING_STOP.has(text[i] ?? "")) i++;
    tokens.push({ type: "string", value: text.slice(start, i), start });
  }
  tokens.push({ type: "eof", value: "", start: text.length });
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Parser

function describe(token: Token): string {
  if (token.type === "eof") return "the end of the query";
  if (token.type === "string") return quote(token.value, 40);
  return `"${token.value}"`;
}

/** Parses an Aptly package query. Throws QUERY_INVALID naming the position and what was expected. */
export function parsePackageQuery(text: string): PackageQuery {
  const tokens = tokenize(text);
  let pos = 0;
  const peek = (): Token => tokens[pos] ?? { type: "eof", value: "", start: text.length };
  const next = (): Token => {
    const t = peek();
    if (t.type !== "eof") pos++;
    return t;
  };
  const fail = (token: Token, expected: string): never => {
    throw invalid(text, token.start, `expected ${expected}, found ${describe(token)}`, expected);
  };
  const expect = (type: TokenType, expected: string): Token => {
    const t = peek();
    if (t.type !== type) fail(t, expected);
    return next();
  };

  const parseOr = (): PackageQuery => {
    const terms = [parseAnd()];
    while (peek().type === "|") {
      next();
      terms.push(parseAnd());
    }
    return combine("or", terms);
  };
  const parseAnd = (): PackageQuery => {
    const terms = [parseNot()];
    while (peek().type === ",") {
      next();
      terms.push(parseNot());
    }
    return combine("and", terms);
  };
  const parseNot = (): PackageQuery => {
    if (peek().type === "!") {
      next();
      return { kind: "not", term: parseNot() };
    }
    return parsePrimary();
  };
  const parsePrimary = (): PackageQuery => {
    if (peek().type === "(") {
      next();
      const q = parseOr();
      expect(")", '")"');
      return q;
    }
    return parseTerm();
  };
  const parseCondition = (): QueryCondition | undefined => {
    if (peek().type !== "(") return undefined;
    next();
    let op: QueryOp = "=";
    if (peek().type === "op") op = next().value as QueryOp;
    const value = expect("string", "a value").value;
    expect(")", '")"');
    return { op, value };
  };
  const parseTerm = (): PackageQuery => {
    const token = expect("string", "a package name, field name or name_version_arch reference");
    const word = token.value;
    const conditionStart = peek();
    const condition = parseCondition();
    const first = word.charAt(0);

    if (first === "$" || (first !== first.toLowerCase() && !word.includes("_"))) {
      if (first === "$" ? !SPECIAL_FIELDS.has(word) : !isValidFieldName(word)) {
        throw invalid(
          text,
          token.start,
          `unknown field ${quote(word)}`,
          `a control field or one of ${[...SPECIAL_FIELDS].join(", ")}`,
        );
      }
      const q: FieldQuery = condition
        ? { kind: "field", field: word, condition }
        : { kind: "field", field: word };
      if (condition) checkCondition(text, conditionStart, condition, word === "$Version");
      return q;
    }

    if (condition === undefined) {
      const ref = splitRef(word);
      if (ref !== undefined) {
        if (!isValidPackageName(ref.name))
          throw invalid(text, token.start, `invalid package name ${quote(ref.name)}`);
        if (!isValidVersion(ref.version))
          throw invalid(text, token.start, `invalid version ${quote(ref.version)}`);
        if (!isValidArchitecture(ref.architecture)) {
          throw invalid(text, token.start, `invalid architecture ${quote(ref.architecture)}`);
        }
        return { kind: "ref", ...ref };
      }
    }

    if (!isValidPackageName(word)) {
      throw invalid(
        text,
        token.start,
        `invalid package name ${quote(word)}`,
        "a package name (lowercase letters, digits and '+-.'), a Field or name_version_arch",
      );
    }
    if (condition) checkCondition(text, conditionStart, condition, true);
    let architecture: string | undefined;
    if (peek().type === "{") {
      next();
      const arch = expect("string", "an architecture");
      if (!isValidArchitecture(arch.value)) {
        throw invalid(text, arch.start, `invalid architecture ${quote(arch.value)}`, "an architecture");
      }
      architecture = arch.value;
      expect("}", '"}"');
    }
    return {
      kind: "package",
      name: word,
      ...(condition ? { condition } : {}),
      ...(architecture !== undefined ? { architecture } : {}),
    };
  };

  const query = parseOr();
  if (peek().type !== "eof") fail(peek(), '",", "|" or the end of the query');
  return query;
}

/** Flattens `a | (b | c)` into one list, so formatting and parsing again gives the same tree. */
function combine(kind: "or" | "and", terms: PackageQuery[]): PackageQuery {
  if (terms.length === 1 && terms[0] !== undefined) return terms[0];
  const flat: PackageQuery[] = [];
  for (const t of terms) {
    if (t.kind === kind) flat.push(...t.terms);
    else flat.push(t);
  }
  return { kind, terms: flat };
}

/** Aptly's rule: the first `_` ends the name, the last one starts the architecture. */
function splitRef(word: string): { name: string; version: string; architecture: string } | undefined {
  const first = word.indexOf("_");
  const last = word.lastIndexOf("_");
  if (first < 0 || last === first) return undefined;
  return {
    name: word.slice(0, first),
    version: word.slice(first + 1, last),
    architecture: word.slice(last + 1),
  };
}

function checkCondition(text: string, at: Token, condition: QueryCondition, isVersion: boolean): void {
  const problem = conditionProblem(condition, isVersion);
  if (problem !== undefined) throw invalid(text, at.start, problem);
}

function conditionProblem(condition: QueryCondition, isVersion: boolean): string | undefined {
  const { op, value } = condition;
  if (op === "%" || op === "~") {
    try {
      compile(condition);
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
    return undefined;
  }
  if (isVersion && !isValidVersion(value)) return `invalid version ${quote(value)}`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Matching

const compiled = new WeakMap<QueryCondition, RegExp>();

function compile(condition: QueryCondition): RegExp {
  let re = compiled.get(condition);
  if (re === undefined) {
    if (condition.op === "~") {
      try {
        re = new RegExp(condition.value);
      } catch {
        throw new Error(`invalid regular expression ${quote(condition.value)}`);
      }
    } else {
      re = globToRegExp(condition.value);
    }
    compiled.set(condition, re);
  }
  return re;
}

/**
 * Go's filepath.Match, which Aptly uses for `%`: `*` any run and `?` any one character except `/`,
 * `[a-z]`/`[^a-z]` classes, `\` escapes; the whole value must match.
 */
function globToRegExp(glob: string): RegExp {
  const bad = (why: string): never => {
    throw new Error(`invalid pattern ${quote(glob)}: ${why}`);
  };
  const escape = (ch: string): string => ch.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
  let out = "^";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] ?? "";
    if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "\\") {
      if (i + 1 >= glob.length) bad("it ends with '\\'");
      out += escape(glob[++i] ?? "");
    } else if (c === "[") {
      let j = i + 1;
      let cls = "[";
      if (glob[j] === "^") {
        cls += "^";
        j++;
      }
      let ranges = 0;
      for (;;) {
        if (j >= glob.length) bad("'[' is not closed");
        if (glob[j] === "]" && ranges > 0) break;
        let lo = glob[j] ?? "";
        if (lo === "\\") lo = glob[++j] ?? bad("it ends with '\\'");
        j++;
        let hi = lo;
        if (glob[j] === "-" && glob[j + 1] !== undefined && glob[j + 1] !== "]") {
          hi = glob[j + 1] ?? "";
          j += 2;
          if (hi === "\\") hi = glob[j++] ?? bad("it ends with '\\'");
          if (hi < lo) bad(`the range ${lo}-${hi} is reversed`);
        }
        cls += lo === hi ? escape(lo) : `${escape(lo)}-${escape(hi)}`;
        ranges++;
      }
      out += `${cls}]`;
      i = j;
    } else out += escape(c);
  }
  return new RegExp(`${out}$`);
}

/** Does the package match the query? Evaluates exactly as Aptly does (see the module comment). */
export function matchesQuery(query: PackageQuery, pkg: QueryTarget): boolean {
  switch (query.kind) {
    case "or":
      return query.terms.some((t) => matchesQuery(t, pkg));
    case "and":
      return query.terms.every((t) => matchesQuery(t, pkg));
    case "not":
      return !matchesQuery(query.term, pkg);
    case "ref":
      return (
        pkg.name === query.name && pkg.version === query.version && pkg.architecture === query.architecture
      );
    case "package":
      if (query.architecture !== undefined && !matchesArchitecture(pkg.architecture, query.architecture)) {
        return false;
      }
      if (query.condition === undefined) return pkg.name === query.name || providesName(pkg, query.name);
      return pkg.name === query.name && matchesVersion(pkg.version, query.condition);
    case "field":
      return matchesField(query, pkg);
  }
}

/** `all` packages match every architecture except `source`. */
function matchesArchitecture(pkgArch: string, arch: string): boolean {
  return (pkgArch === "all" && arch !== "source") || pkgArch === arch;
}

function providesName(pkg: QueryTarget, name: string): boolean {
  const provides = pkg.field("Provides");
  if (provides === undefined || !provides.includes(name)) return false;
  // Names only: `Provides: foo (= 1.0)` provides foo.
  return provides.split(",").some((p) => /^\s*([^\s(:]+)/.exec(p)?.[1] === name);
}

function matchesVersion(version: string, condition: QueryCondition): boolean {
  const { op, value } = condition;
  if (op === "%" || op === "~") return compile(condition).test(version);
  let c: number;
  try {
    c = compareVersions(version, value);
  } catch {
    return false; // an unparsable version satisfies no relation
  }
  switch (op) {
    case "<<":
      return c < 0;
    case "<=":
      return c <= 0;
    case "=":
      return c === 0;
    case ">=":
      return c >= 0;
    case ">>":
      return c > 0;
  }
}

function matchesField(query: FieldQuery, pkg: QueryTarget): boolean {
  const { field, condition } = query;
  if (field === "$Version") return condition === undefined || matchesVersion(pkg.version, condition);
  if (field === "$Architecture" && condition?.op === "=")
    return matchesArchitecture(pkg.architecture, condition.value);
  const value = fieldValue(pkg, field);
  if (condition === undefined) return value !== "";
  const ref = condition.value;
  switch (condition.op) {
    case "=":
      return value === ref;
    case "<<":
      return value < ref;
    case "<=":
      return value <= ref;
    case ">=":
      return value >= ref;
    case ">>":
      return value > ref;
    case "%":
    case "~":
      return compile(condition).test(value);
  }
}

function fieldValue(pkg: QueryTarget, field: string): string {
  const isSource = pkg.packageType === "source";
  switch (field) {
    case "$Source":
      return isSource ? "" : pkg.source.replace(/\s*\(.*$/, "") || pkg.name;
    case "$SourceVersion": {
      if (isSource) return "";
      const m = /\(([^)]*)\)/.exec(pkg.field("Source") ?? "");
      return m?.[1]?.trim() ?? pkg.version;
    }
    case "$Architecture":
      return pkg.architecture;
    case "$PackageType":
      return pkg.packageType;
  }
  const key = field.toLowerCase();
  switch (key) {
    case "name":
      return pkg.name;
    case "version":
      return pkg.version;
    case "architecture":
      return isSource ? (pkg.field("Architecture") ?? "") : pkg.architecture;
    case "source":
      return isSource ? "" : (pkg.field("Source") ?? "");
  }
  const value = pkg.field(field) ?? "";
  if (RELATION_FIELDS.has(key)) {
    return value
      .split(",")
      .map((s) => s.trim().replace(/\s+/g, " "))
      .filter((s) => s !== "")
      .join(", ");
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Helpers for callers

/**
 * The package names the query can match, for a query made of names (`a | b`, `a, $Version (>= 1)`,
 * `Name (= a)`, `a_1_amd64`); undefined when it may match any name (a field filter, `!`…).
 * A versionless name term also matches packages that Provide the name (queryUsesProvides()); a
 * SQL pre-filter must then keep packages with a Provides field as well.
 */
export function queryNames(q: PackageQuery): string[] | undefined {
  const names = collectNames(q);
  return names === undefined ? undefined : [...names].sort();
}

function collectNames(q: PackageQuery): Set<string> | undefined {
  switch (q.kind) {
    case "package":
    case "ref":
      return new Set([q.name]);
    case "field":
      return q.field.toLowerCase() === "name" && q.condition?.op === "="
        ? new Set([q.condition.value])
        : undefined;
    case "not":
      return undefined;
    case "or": {
      const all = new Set<string>();
      for (const t of q.terms) {
        const names = collectNames(t);
        if (names === undefined) return undefined;
        for (const n of names) all.add(n);
      }
      return all;
    }
    case "and": {
      let common: Set<string> | undefined;
      for (const t of q.terms) {
        const names = collectNames(t);
        if (names === undefined) continue;
        common = common === undefined ? names : new Set([...common].filter((n) => names.has(n)));
      }
      return common;
    }
  }
}

/** True when a name term without a version may match a package through its Provides field. */
export function queryUsesProvides(q: PackageQuery): boolean {
  switch (q.kind) {
    case "package":
      return q.condition === undefined;
    case "or":
    case "and":
      return q.terms.some(queryUsesProvides);
    case "not":
      return queryUsesProvides(q.term);
    case "field":
    case "ref":
      return false;
  }
}

/** Canonical text of a query: parsing it gives the same tree back. Used in messages and logs. */
export function formatPackageQuery(q: PackageQuery): string {
  switch (q.kind) {
    case "or":
      return q.terms.map((t) => formatPackageQuery(t)).join(" | ");
    case "and":
      return q.terms
        .map((t) => (t.kind === "or" ? `(${formatPackageQuery(t)})` : formatPackageQuery(t)))
        .join(", ");
    case "not":
      return q.term.kind === "or" || q.term.kind === "and"
        ? `!(${formatPackageQuery(q.term)})`
        : `!${formatPackageQuery(q.term)}`;
    case "ref":
      return `${q.name}_${q.version}_${q.architecture}`;
    case "package":
      return (
        q.name +
        (q.condition ? ` ${formatCondition(q.condition)}` : "") +
        (q.architecture !== undefined ? ` {${q.architecture}}` : "")
      );
    case "field":
      return quoteValue(q.field) + (q.condition ? ` ${formatCondition(q.condition)}` : "");
  }
}

function formatCondition(c: QueryCondition): string {
  return `(${c.op} ${quoteValue(c.value)})`;
}

function quoteValue(value: string): string {
  if (value !== "" && !/[\s()|,!{}'"]/.test(value) && !/^[<>=%~]/.test(value)) return value;
  return `'${value.replace(/[\\']/g, "\\$&")}'`;
}
