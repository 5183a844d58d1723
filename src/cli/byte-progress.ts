/** Byte counts for uploads and downloads: sizes in words, and progress on a spinner. */
import { Transform } from "node:stream";
import type { Spinner } from "./output.js";

const UNITS = ["KiB", "MiB", "GiB", "TiB"];

/** `512 B`, `1.5 KiB`, `12 MiB`, `3.2 GiB`: one decimal below 10, none above. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  let value = n;
  let unit = "B";
  for (const next of UNITS) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${unit}`;
}

/**
 * Shows `LABEL: 1.2 MiB of 3.4 MiB` on a spinner as bytes go by. On a terminal it redraws a few
 * times a second; in a pipe or a CI log a new line every few seconds is plenty.
 */
export class ByteProgress {
  private bytes = 0;
  private shownAt = 0;
  private readonly everyMs: number;

  constructor(
    private readonly spinner: Spinner,
    private readonly label: string,
    private readonly total?: number,
    tty: boolean = process.stderr.isTTY === true,
  ) {
    this.everyMs = tty ? 100 : 3000;
    this.show();
  }

  get count(): number {
    return this.bytes;
  }

  add(n: number): void {
    this.bytes += n;
    const now = Date.now();
    if (now - this.shownAt >= this.everyMs) this.show(now);
  }

  /** A Transform that passes the data through, counting it here. */
  counter(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        this.add(chunk.length);
        done(null, chunk);
      },
    });
  }

  private show(now = Date.now()): void {
    this.shownAt = now;
    const of = this.total !== undefined ? ` of ${formatBytes(this.total)}` : "";
    this.spinner.update(`${this.label}: ${formatBytes(this.bytes)}${of}`);
  }
}
