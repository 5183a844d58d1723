import { createServer } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { hintFor, reportError, run } from "../../src/cli/main.js";
import { CliExit } from "../../src/cli/context.js";
import type { TextSink } from "../../src/cli/output.js";
import { KilnError } from "../../src/errors/catalogue.js";

function sink(): TextSink & { text: string } {
  const out = {
    text: "",
    write(chunk: string) {
      out.text += chunk;
      return true;
    },
  };
  return out;
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

describe("reportError", () => {
  it("prints message, code and hint to stderr and maps the code to its exit status", () => {
    const io = { stdout: sink(), stderr: sink() };
    const code = reportError(new KilnError("HUB_UNREACHABLE", "cannot reach the hub at http://x"), false, io);
    expect(code).toBe(6);
    expect(io.stdout.text).toBe("");
    expect(io.stderr.text).toBe(
      "kiln: cannot reach the hub at http://x [HUB_UNREACHABLE]\n" +
        "hint: start the hub with `kiln serve`, or point --hub or KILN_HUB at a running one\n",
    );
  });

  it("with --json prints the error object to stdout only", () => {
    const io = { stdout: sink(), stderr: sink() };
    expect(reportError(new KilnError("TASK_NOT_FOUND", "no task 9", { status: 404 }), true, io)).toBe(3);
    expect(JSON.parse(io.stdout.text)).toEqual({
      error: { code: "TASK_NOT_FOUND", message: "no task 9", details: { status: 404 } },
    });
    expect(io.stderr.text).toBe("");
  });

  it("exits 1 on unknown errors and with the code a command asked for", () => {
    const io = { stdout: sink(), stderr: sink() };
    expect(reportError(new Error("oops"), false, io)).toBe(1);
    expect(io.stderr.text).toBe("kiln: oops\n");
    expect(reportError(new CliExit(1), false, io)).toBe(1);
  });

  it("gives no hint that the message already gives", () => {
    expect(
      hintFor(new KilnError("HOST_NOT_FOUND", 'no host named "x"; see `kiln host list`')),
    ).toBeUndefined();
    expect(hintFor(new KilnError("HOST_NOT_FOUND", 'no host named "x"'))).toContain("`kiln host list`");
    expect(hintFor(new KilnError("HOST_EXISTS"))).toBeUndefined();
  });
});

describe("run", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("returns 2 on a usage error", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    expect(await run(["task", "sleep", "soon"])).toBe(2);
    expect(await run(["task", "sleep", "1", "--lock", ":shared"])).toBe(2);
    expect(await run(["task", "frobnicate"])).toBe(2);
    expect(stderr.mock.calls.map((c) => String(c[0])).join("")).toMatch(/expected a number from 0 to 86400/);
  });

  it("returns 0 for --help", async () => {
    vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    expect(await run(["task", "list", "--help"])).toBe(0);
  });

  it("says the hub is unreachable, with exit code 6, when nothing listens at --hub", async () => {
    const port = await closedPort();
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    expect(await run(["--hub", `http://127.0.0.1:${port}`, "task", "list"])).toBe(6);
    const text = stderr.mock.calls.map((c) => String(c[0])).join("");
    expect(text).toMatch(/\[HUB_UNREACHABLE\]/);
    expect(text).toMatch(/kiln serve/);
  });

  it("puts the error on stdout as JSON with --json", async () => {
    const port = await closedPort();
    const stdout = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    expect(await run(["task", "show", "1", "--json", "--hub", `http://127.0.0.1:${port}`])).toBe(6);
    const body = JSON.parse(stdout.mock.calls.map((c) => String(c[0])).join("")) as {
      error: { code: string };
    };
    expect(body.error.code).toBe("HUB_UNREACHABLE");
  });
});
