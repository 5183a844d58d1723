/** What every CLI command shares: the hub and token to use, argument parsers, exit codes. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { KilnClient } from "../client/client.js";

export const DEFAULT_HUB = "http://127.0.0.1:8471";
export const DEFAULT_DATA = "./kiln-data";

/** The options `kiln` takes before or after any command. */
export interface GlobalOptions {
  hub?: string;
  token?: string;
}

export type Env = Record<string, string | undefined>;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** --hub, else KILN_HUB, else the local default. */
export function resolveHub(flags: GlobalOptions, env: Env = process.env): string {
  return nonEmpty(flags.hub) ?? nonEmpty(env.KILN_HUB) ?? DEFAULT_HUB;
}

export type TokenSource = "flag" | "env" | "file" | "none";

/**
 * --token, else KILN_TOKEN, else the admin token the local hub wrote to <KILN_DATA>/admin-token.
 * No token at all is fine: calls that need one get AUTH_REQUIRED from the hub.
 */
export function resolveToken(
  flags: GlobalOptions,
  env: Env = process.env,
  cwd: string = process.cwd(),
): { token: string | undefined; source: TokenSource; file?: string } {
  const flag = nonEmpty(flags.token);
  if (flag) return { token: flag, source: "flag" };
  const fromEnv = nonEmpty(env.KILN_TOKEN);
  if (fromEnv) return { token: fromEnv, source: "env" };
  const file = path.resolve(cwd, nonEmpty(env.KILN_DATA) ?? DEFAULT_DATA, "admin-token");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return { token: undefined, source: "none" };
  }
  const token = nonEmpty(text);
  return token ? { token, source: "file", file } : { token: undefined, source: "none" };
}

/** Where the token of the last client made came from, for error hints ("the token from KILN_TOKEN …"). */
let lastTokenSource: { source: TokenSource; file?: string } = { source: "none" };

export function describeTokenSource(): string | undefined {
  switch (lastTokenSource.source) {
    case "flag":
      return "--token";
    case "env":
      return "KILN_TOKEN";
    case "file":
      return lastTokenSource.file;
    case "none":
      return undefined;
  }
}

/** The client for a command, from the global options of its program. */
export function clientFor(cmd: Command, env: Env = process.env): KilnClient {
  const flags = cmd.optsWithGlobals<GlobalOptions>();
  const { token, ...source } = resolveToken(flags, env);
  lastTokenSource = source;
  return new KilnClient({ hub: resolveHub(flags, env), token });
}

/**
 * Ends the command with an exit code after it has said what it had to say (a failed task, a
 * failed log follow). main.ts turns it into the process's exit code and prints nothing more.
 */
export class CliExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
    this.name = "CliExit";
  }
}

// Argument parsers for commander: a bad value is a usage error naming what was expected.

export function parseInteger(min: number, max: number = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        max === Number.MAX_SAFE_INTEGER
          ? `expected a whole number, ${min} or more`
          : `expected a whole number from ${min} to ${max}`,
      );
    }
    return n;
  };
}

export function parseNumber(min: number, max: number = Number.MAX_VALUE): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        max === Number.MAX_VALUE
          ? `expected a number, ${min} or more`
          : `expected a number from ${min} to ${max}`,
      );
    }
    return n;
  };
}

export const parseId = parseInteger(1);

/** `a,b,c` (repeatable: values given twice add up) → ["a", "b", "c"]. */
export function parseList(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (items.length === 0) throw new InvalidArgumentError("expected a comma-separated list");
  return [...(previous ?? []), ...items];
}
