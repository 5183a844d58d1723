import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ERRORS } from "../../src/errors/catalogue.js";

/** The table rows of docs/errors.md as {code, status, exit}. */
function documented(): Map<string, { status: number; exit: number }> {
  const doc = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  const rows = new Map<string, { status: number; exit: number }>();
  for (const line of doc.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    const code = /^`([A-Z_]+)`$/.exec(cells[1] ?? "")?.[1];
    if (code) rows.set(code, { status: Number(cells[2]), exit: Number(cells[3]) });
  }
  return rows;
}

describe("docs/errors.md", () => {
  it("documents every error code with its HTTP status and exit code", () => {
    const rows = documented();
    for (const [code, spec] of Object.entries(ERRORS)) {
      expect(rows.get(code), `docs/errors.md has no row for ${code}`).toEqual({
        status: spec.status,
        exit: spec.exit,
      });
    }
  });
  it("documents no code that does not exist", () => {
    for (const code of documented().keys()) expect(Object.keys(ERRORS)).toContain(code);
  });
});
