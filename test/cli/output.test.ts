import { describe, expect, it } from "vitest";
import {
  formatDuration,
  formatFields,
  formatRelative,
  formatTable,
  Spinner,
  type TextSink,
} from "../../src/cli/output.js";

function sink(tty = false): TextSink & { text: string } {
  const out = {
    text: "",
    isTTY: tty,
    columns: 40,
    write(chunk: string) {
      out.text += chunk;
      return true;
    },
  };
  return out;
}

describe("formatTable", () => {
  const rows = [
    { id: 7, name: "sleep", host: "b1" },
    { id: 123, name: "group", host: null },
  ];
  const columns = [
    { header: "id", value: (r: (typeof rows)[number]) => r.id, align: "right" as const },
    { header: "name", value: (r: (typeof rows)[number]) => r.name },
    { header: "host", value: (r: (typeof rows)[number]) => r.host },
  ];

  it("aligns columns two spaces apart, numbers to the right, none with trailing blanks", () => {
    expect(formatTable(rows, columns)).toBe(" ID  NAME   HOST\n  7  sleep  b1\n123  group  -\n");
  });

  it("measures characters, not bytes", () => {
    const text = formatTable(
      [{ a: "ö✓", b: "x" }],
      [
        { header: "a", value: (r: { a: string; b: string }) => r.a },
        { header: "b", value: (r: { a: string; b: string }) => r.b },
      ],
    );
    expect(text).toBe("A   B\nö✓  x\n");
  });

  it("prints the headers alone for no rows", () => {
    expect(formatTable([], columns)).toBe("ID  NAME  HOST\n");
  });
});

describe("formatFields", () => {
  it("aligns labels, skips empty values and indents continuation lines", () => {
    expect(
      formatFields([
        ["state", "open"],
        ["host", null],
        ["description", "a\nb"],
      ]),
    ).toBe("state        open\ndescription  a\n             b\n");
  });
});

describe("times", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");

  it("formats relative times in the largest whole unit", () => {
    expect(formatRelative("2025-06-01T11:59:59.500Z", now)).toBe("just now");
    expect(formatRelative("2025-06-01T11:59:15Z", now)).toBe("45s ago");
    expect(formatRelative("2025-06-01T11:57:00Z", now)).toBe("3m ago");
    expect(formatRelative("2025-06-01T09:00:00Z", now)).toBe("3h ago");
    expect(formatRelative("2025-05-29T12:00:00Z", now)).toBe("3d ago");
    expect(formatRelative("2025-06-01T12:02:00Z", now)).toBe("in 2m");
    expect(formatRelative(null, now)).toBe("never");
  });

  it("formats durations", () => {
    expect(formatDuration(4.4)).toBe("4s");
    expect(formatDuration(65)).toBe("1m 05s");
    expect(formatDuration(7200)).toBe("2h 00m");
    expect(formatDuration(90000)).toBe("1d 1h");
  });
});

describe("Spinner", () => {
  it("off a terminal prints a line only when the text changes", () => {
    const out = sink(false);
    const spinner = new Spinner({ out });
    spinner.update("task 1 free");
    spinner.update("task 1 free");
    spinner.update("task 1 open");
    spinner.log("note");
    spinner.stop("done");
    expect(out.text).toBe("task 1 free\ntask 1 open\nnote\ndone\n");
  });

  it("on a terminal redraws one line in place and clears it at the end", () => {
    const out = sink(true);
    const spinner = new Spinner({ out, intervalMs: 10_000 });
    spinner.update("task 1 free");
    spinner.update("task 1 open and a very long text that cannot fit in forty columns");
    spinner.stop();
    const draws = out.text.split("\r\x1b[K").filter(Boolean);
    expect(draws[0]).toMatch(/^⠋ task 1 free \(0s\)$/);
    expect([...(draws[1] ?? "")].length).toBeLessThan(40);
    expect(draws[1]).toMatch(/…$/);
    expect(out.text.endsWith("\r\x1b[K")).toBe(true);
    expect(out.text).not.toContain("\n");
  });
});
