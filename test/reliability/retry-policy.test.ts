import { describe, expect, it } from "vitest";
import {
  formatRetryPolicy,
  parseRetryOn,
  parseRetryPolicy,
  shouldRetry,
} from "../../src/builds/retry-policy.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { loadHubConfig } from "../../src/config/config.js";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof KilnError ? e.code : `not a KilnError: ${String(e)}`;
  }
  return undefined;
}

describe("retry policy strings", () => {
  it("parses counts, exit codes, ranges, signals and infra, and prints them back", () => {
    const p = parseRetryPolicy("3 on exit:75,signal:KILL,infra,exit:80-82,signal:SIGTERM,signal:2");
    expect(p).toEqual({
      retries: 3,
      exitCodes: [75, 80, 81, 82],
      signals: ["SIGINT", "SIGKILL", "SIGTERM"],
      infra: true,
    });
    expect(formatRetryPolicy(p)).toBe(
      "3 on exit:75,exit:80,exit:81,exit:82,signal:INT,signal:KILL,signal:TERM",
    );
    expect(parseRetryPolicy(formatRetryPolicy(p))).toEqual(p);
    expect(formatRetryPolicy(parseRetryPolicy("none"))).toBe("none");
    expect(formatRetryPolicy(parseRetryPolicy("2"))).toBe("2");
    expect(parseRetryOn("infra")).toEqual({ exitCodes: [], signals: [], infra: true });
  });

  it.each([
    "exit:0",
    "exit:256",
    "exit:abc",
    "exit:80-70",
    "signal:NOPE",
    "signal:99",
    "oops",
    "exit:75,,exit:76",
    "code:75",
  ])("refuses the list %j with RETRY_POLICY_INVALID", (list) => {
    expect(codeOf(() => parseRetryOn(list))).toBe("RETRY_POLICY_INVALID");
  });

  it.each(["-1", "21", "two on exit:1", "2 on", "2 at exit:1"])("refuses the policy %j", (text) => {
    expect(codeOf(() => parseRetryPolicy(text))).toBe("RETRY_POLICY_INVALID");
  });

  it("retries only listed exit codes and signals, up to the count, never infra/cancel/timeout", () => {
    const p = parseRetryPolicy("2 on exit:75,signal:KILL");
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: 75 }, 0)).toBe(true);
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: 75 }, 1)).toBe(true);
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: 75 }, 2)).toBe(false);
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: 2 }, 0)).toBe(false);
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: null, signal: "SIGKILL" }, 0)).toBe(
      true,
    );
    expect(shouldRetry(p, { code: "BUILD_FAILED", message: "", exitCode: null, signal: "SIGTERM" }, 0)).toBe(
      false,
    );
    expect(shouldRetry(p, { code: "HOST_LOST", message: "", infra: true, exitCode: 75 }, 0)).toBe(false);
    expect(shouldRetry(p, { code: "TASK_TIMEOUT", message: "", exitCode: 75 }, 0)).toBe(false);
  });

  it("reads kiln.toml's [retry] default and refuses a bad one with CONFIG_INVALID", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-retry-conf-"));
    writeFileSync(path.join(dir, "kiln.toml"), '[retry]\ndefault = "1 on signal:KILL,exit:75"\n');
    expect(loadHubConfig({ data: dir }, {}).engine.retryDefault).toBe("1 on exit:75,signal:KILL");
    writeFileSync(path.join(dir, "kiln.toml"), '[retry]\ndefault = "1 on exit:999"\n');
    expect(codeOf(() => loadHubConfig({ data: dir }, {}))).toBe("CONFIG_INVALID");
    writeFileSync(path.join(dir, "kiln.toml"), "metrics_public = false\n");
    expect(loadHubConfig({ data: dir }, {}).metricsPublic).toBe("never");
  });
});
