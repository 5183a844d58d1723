/** Output helpers of the CLI: JSON, aligned tables, field lists, times and a spinner. */

/** Something to write text to: process.stdout, process.stderr, or a test double. */
export interface TextSink {
  write(text: string): boolean;
  isTTY?: boolean;
  columns?: number;
  once?(event: "drain", listener: () => void): unknown;
}

/** Writes text, waiting for the stream to drain when it is full (long logs into a pipe). */
export async function write(text: string, out: TextSink = process.stdout): Promise<void> {
  if (out.write(text) || !out.once) return;
  await new Promise<void>((resolve) => out.once?.("drain", resolve));
}

export function printJson(value: unknown, out: TextSink = process.stdout): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

export interface Column<T> {
  header: string;
  value: (row: T) => string | number | boolean | null | undefined;
  align?: "left" | "right";
}

function cell(value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined || value === "") return "-";
  return String(value);
}

function width(text: string): number {
  return [...text].length;
}

/** Plain-text columns two spaces apart, headers in capitals, no trailing blanks. */
export function formatTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const grid = [
    columns.map((c) => c.header.toUpperCase()),
    ...rows.map((r) => columns.map((c) => cell(c.value(r)))),
  ];
  const widths = columns.map((_, i) => Math.max(...grid.map((line) => width(line[i] ?? ""))));
  return grid
    .map((line) =>
      line
        .map((text, i) => {
          const pad = " ".repeat((widths[i] ?? 0) - width(text));
          return columns[i]?.align === "right" ? pad + text : text + pad;
        })
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

export function printTable<T>(
  rows: readonly T[],
  columns: readonly Column<T>[],
  out: TextSink = process.stdout,
): void {
  out.write(formatTable(rows, columns));
}

/** `label  value` lines with the labels aligned; fields without a value are left out. */
export function formatFields(fields: readonly [string, string | number | null | undefined][]): string {
  const shown = fields.filter(
    (f): f is [string, string | number] => f[1] !== null && f[1] !== undefined && f[1] !== "",
  );
  const labelWidth = Math.max(0, ...shown.map(([label]) => width(label)));
  return shown
    .map(([label, value]) => {
      const lines = String(value).split("\n");
      const indent = " ".repeat(labelWidth + 2);
      return `${label.padEnd(labelWidth)}  ${lines.join(`\n${indent}`)}\n`;
    })
    .join("");
}

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

/** Local time as `2025-01-31 14:05:09`; "-" for none. */
export function formatTimestamp(iso: string | null | undefined): string {
  if (!iso) return "-";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

/** A duration in seconds as `45s`, `3m 05s`, `2h 10m`, `3d 4h`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** `5s ago`, `3m ago`, `in 2h`; "never" for none. */
export function formatRelative(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "never";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return iso;
  const diff = (now - t) / 1000;
  if (Math.abs(diff) < 1) return "just now";
  const units: [number, string][] = [
    [86400, "d"],
    [3600, "h"],
    [60, "m"],
    [1, "s"],
  ];
  const abs = Math.abs(diff);
  const [size, unit] = units.find(([size]) => abs >= size) ?? [1, "s"];
  const amount = `${Math.floor(abs / size)}${unit}`;
  return diff >= 0 ? `${amount} ago` : `in ${amount}`;
}

/** `2025-01-31 14:05:09 (3m ago)`. */
export function formatTime(iso: string | null | undefined, now: number = Date.now()): string | null {
  if (!iso) return null;
  return `${formatTimestamp(iso)} (${formatRelative(iso, now)})`;
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/**
 * A progress line on stderr. On a terminal it animates in place; elsewhere (a pipe, a CI log)
 * it prints a line only when the text changes, so logs stay readable.
 */
export class Spinner {
  private readonly out: TextSink;
  private readonly tty: boolean;
  private text = "";
  private printed: string | undefined;
  private frame = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();

  constructor(opts: { out?: TextSink; tty?: boolean; intervalMs?: number } = {}) {
    this.out = opts.out ?? process.stderr;
    this.tty = opts.tty ?? this.out.isTTY === true;
    if (this.tty) {
      this.timer = setInterval(() => this.render(), opts.intervalMs ?? 80);
      // The spinner never keeps the process alive by itself.
      this.timer.unref();
    }
  }

  update(text: string): void {
    this.text = text;
    if (this.tty) this.render();
    else if (text !== this.printed) {
      this.printed = text;
      this.out.write(`${text}\n`);
    }
  }

  /** Prints a line that stays, above the spinner. */
  log(line: string): void {
    if (this.tty) {
      this.out.write(`\r\x1b[K${line}\n`);
      this.render();
    } else {
      this.out.write(`${line}\n`);
    }
  }

  stop(finalLine?: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty) this.out.write("\r\x1b[K");
    if (finalLine !== undefined) this.out.write(`${finalLine}\n`);
  }

  private render(): void {
    if (!this.timer) return;
    const frame = FRAMES[this.frame++ % FRAMES.length] ?? "";
    // The elapsed time only on a terminal: elsewhere it would print a new line every second.
    let line = `${frame} ${this.text} (${formatDuration((Date.now() - this.startedAt) / 1000)})`;
    // A wrapped line cannot be redrawn with \r: cut it to the terminal's width.
    const columns = this.out.columns;
    if (columns && width(line) >= columns) line = `${[...line].slice(0, columns - 2).join("")}…`;
    this.out.write(`\r\x1b[K${line}`);
  }
}
