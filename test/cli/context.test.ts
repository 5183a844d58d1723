import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { InvalidArgumentError } from "commander";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  DEFAULT_HUB,
  parseInteger,
  parseList,
  parseNumber,
  resolveHub,
  resolveToken,
} from "../../src/cli/context.js";

describe("resolveHub", () => {
  it("prefers --hub, then KILN_HUB, then the local default", () => {
    expect(resolveHub({ hub: "http://a:1" }, { KILN_HUB: "http://b:2" })).toBe("http://a:1");
    expect(resolveHub({}, { KILN_HUB: "http://b:2" })).toBe("http://b:2");
    expect(resolveHub({}, { KILN_HUB: "  " })).toBe(DEFAULT_HUB);
    expect(resolveHub({}, {})).toBe(DEFAULT_HUB);
  });
});

describe("resolveToken", () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-token-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function writeAdminToken(dataDir: string, text: string): string {
    mkdirSync(dataDir, { recursive: true });
    const file = path.join(dataDir, "admin-token");
    writeFileSync(file, text, { mode: 0o600 });
    return file;
  }

  it("prefers --token over KILN_TOKEN over the admin-token file", () => {
    const data = path.join(dir, "data");
    writeAdminToken(data, "from-file\n");
    const env = { KILN_TOKEN: "from-env", KILN_DATA: data };
    expect(resolveToken({ token: "from-flag" }, env, dir)).toEqual({ token: "from-flag", source: "flag" });
    expect(resolveToken({}, env, dir)).toEqual({ token: "from-env", source: "env" });
    expect(resolveToken({}, { KILN_DATA: data }, dir)).toEqual({
      token: "from-file",
      source: "file",
      file: path.join(data, "admin-token"),
    });
  });

  it("treats an empty flag or variable as not given", () => {
    const data = path.join(dir, "data");
    writeAdminToken(data, "from-file");
    expect(resolveToken({ token: "" }, { KILN_TOKEN: "", KILN_DATA: data }, dir).token).toBe("from-file");
  });

  it("reads ./kiln-data/admin-token relative to the working directory without KILN_DATA", () => {
    writeAdminToken(path.join(dir, "kiln-data"), "  local-token \n");
    expect(resolveToken({}, {}, dir)).toMatchObject({ token: "local-token", source: "file" });
  });

  it("resolves a relative KILN_DATA against the working directory", () => {
    writeAdminToken(path.join(dir, "rel", "data"), "rel-token");
    expect(resolveToken({}, { KILN_DATA: "rel/data" }, dir).token).toBe("rel-token");
  });

  it("has no token when there is no flag, no variable and no readable file", () => {
    expect(resolveToken({}, {}, dir)).toEqual({ token: undefined, source: "none" });
    writeAdminToken(path.join(dir, "kiln-data"), "\n");
    expect(resolveToken({}, {}, dir)).toEqual({ token: undefined, source: "none" });
  });
});

describe("argument parsers", () => {
  it("parseInteger accepts whole numbers in range only", () => {
    const priority = parseInteger(0, 100);
    expect(priority("0")).toBe(0);
    expect(priority("100")).toBe(100);
    for (const bad of ["101", "-1", "1.5", "", "abc", "1e2"]) {
      expect(() => priority(bad), bad).toThrow(InvalidArgumentError);
    }
  });

  it("parseNumber accepts fractions in range", () => {
    const seconds = parseNumber(0, 86400);
    expect(seconds("0.25")).toBe(0.25);
    expect(() => seconds("86401")).toThrow(/from 0 to 86400/);
    expect(() => seconds(" ")).toThrow(InvalidArgumentError);
  });

  it("parseList splits on commas and adds up repeated options", () => {
    expect(parseList("amd64, arm64,", undefined)).toEqual(["amd64", "arm64"]);
    expect(parseList("riscv64", ["amd64"])).toEqual(["amd64", "riscv64"]);
    expect(() => parseList(",", undefined)).toThrow(InvalidArgumentError);
  });
});
