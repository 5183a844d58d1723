import type { Logger } from "pino";
import type { KilnClient } from "../client/client.js";
import { KilnError } from "../errors/catalogue.js";
import { delay, describeError, isTransientHubError, retryDelayMs } from "./retry.js";

export interface LogStreamOptions {
  client: Pick<KilnClient, "appendLog">;
  taskId: number;
  epoch: number;
  logger?: Logger;
  /** Aborting stops the stream like close(): the attempt is over, its log no longer matters. */
  signal?: AbortSignal;
  /** Milliseconds to gather output before sending it. */
  flushIntervalMs?: number;
  /** Send at once when this many bytes are buffered. */
  chunkBytes?: number;
  /** Largest single request. */
  maxRequestBytes?: number;
  /** While the hub is unreachable output is kept up to this many bytes; the rest is dropped. */
  maxBufferBytes?: number;
  /** Backoff between retries, in seconds (jittered). */
  retryBaseSeconds?: number;
  retryMaxSeconds?: number;
}

/** Codes after which nothing more this attempt writes will be accepted. */
const FINAL_CODES = new Set([
  "LEASE_STALE",
  "TASK_CANCELED",
  "TASK_FINISHED",
  "HOST_MISMATCH",
  "LOG_TOO_LARGE",
]);
const MAX_GAPS_IN_A_ROW = 3;

/**
 * The log of one task attempt, streamed to the hub in chunks at UTF-8 byte offsets.
 *
 * Each chunk is retried unchanged at the same offset until the hub answers, so a retry whose
 * first try did land is a no-op replay; a LOG_GAP (the hub has less than we sent) resyncs to
 * the hub's size. Once the hub says the attempt is over, further output is dropped.
 */
export class LogStream {
  private readonly opts: Required<Omit<LogStreamOptions, "logger" | "signal">>;
  private readonly logger: Logger | undefined;
  private readonly signal: AbortSignal | undefined;
  private pending: string[] = [];
  private pendingBytes = 0;
  private droppedBytes = 0;
  private offset = 0;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  /** Set once the hub refused the attempt's log for good. */
  private dead = false;
  private closed = false;
  /** Made only when a send has to wait to retry: aborting one on every close costs an exception. */
  private stopRetrying: AbortController | undefined;

  constructor(opts: LogStreamOptions) {
    this.opts = {
      client: opts.client,
      taskId: opts.taskId,
      epoch: opts.epoch,
      flushIntervalMs: opts.flushIntervalMs ?? 250,
      chunkBytes: opts.chunkBytes ?? 32 * 1024,
      maxRequestBytes: Math.max(4, opts.maxRequestBytes ?? 1024 * 1024), // 4: one character at least
      maxBufferBytes: opts.maxBufferBytes ?? 64 * 1024 * 1024,
      retryBaseSeconds: opts.retryBaseSeconds ?? 0.2,
      retryMaxSeconds: opts.retryMaxSeconds ?? 10,
    };
    this.logger = opts.logger;
    this.signal = opts.signal;
    if (this.signal?.aborted) this.close();
    else this.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  /** Bytes the hub has acknowledged (the offset of the next chunk). */
  get size(): number {
    return this.offset;
  }

  /** False once the hub refused the log or the stream was closed. */
  get accepting(): boolean {
    return !this.dead && !this.closed;
  }

  write(text: string): void {
    if (!this.accepting || text === "") return;
    const bytes = Buffer.byteLength(text, "utf8");
    if (this.pendingBytes + bytes > this.opts.maxBufferBytes) {
      this.droppedBytes += bytes;
      return;
    }
    if (this.droppedBytes > 0) this.noteDropped();
    this.pending.push(text);
    this.pendingBytes += bytes;
    if (this.pendingBytes >= this.opts.chunkBytes) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.opts.flushIntervalMs);
  }

  /** Sends everything written so far; resolves when the hub has it or refused it for good. */
  async flush(): Promise<void> {
    this.clearTimer();
    if (this.droppedBytes > 0 && this.accepting) this.noteDropped();
    while (this.sending || (this.pendingBytes > 0 && this.accepting)) {
      if (!this.sending) this.kick();
      await this.sending;
    }
  }

  /**
   * For a call that carries the log's last chunk (complete, fail): waits for any send in flight,
   * then hands over what is left, at the offset the hub has. More than a chunk's worth is sent
   * the usual way first. Undefined when nothing is left (or the hub refused the log). Give the
   * chunk back with untake() if the call carrying it was refused.
   */
  async takeTail(): Promise<{ offset: number; data: string } | undefined> {
    this.clearTimer();
    if (this.droppedBytes > 0 && this.accepting) this.noteDropped();
    while (this.sending || (this.pendingBytes > this.opts.chunkBytes && this.accepting)) {
      if (!this.sending) this.kick();
      await this.sending;
    }
    this.clearTimer();
    if (!this.accepting || this.pendingBytes === 0) return undefined;
    const data = this.pending.join("");
    this.pending = [];
    this.pendingBytes = 0;
    return { offset: this.offset, data };
  }

  /** The call carrying takeTail()'s chunk was refused: the chunk goes back to be sent by flush(). */
  untake(tail: { offset: number; data: string }): void {
    if (!this.accepting || tail.offset !== this.offset) return;
    this.pending.unshift(tail.data);
    this.pendingBytes += Buffer.byteLength(tail.data, "utf8");
  }

  /** Stops at once: buffered output is dropped and retries are abandoned. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    this.pending = [];
    this.pendingBytes = 0;
    this.stopRetrying?.abort();
    this.signal?.removeEventListener("abort", this.onAbort);
  }

  private readonly onAbort = () => this.close();

  private noteDropped(): void {
    const note = `\n[kiln: ${this.droppedBytes} bytes of output dropped: the hub was unreachable or too slow]\n`;
    this.droppedBytes = 0;
    this.pending.push(note);
    this.pendingBytes += Buffer.byteLength(note, "utf8");
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private kick(): void {
    this.clearTimer();
    if (this.sending || !this.accepting || this.pendingBytes === 0) return;
    this.sending = this.drain()
      .catch((err: unknown) => {
        this.dead = true;
        this.logger?.error({ err }, "log stream failed");
      })
      .finally(() => {
        this.sending = undefined;
        // Output written during the last send waits for the next tick, or goes now if large.
        if (this.pendingBytes >= this.opts.chunkBytes) this.kick();
        else if (this.pendingBytes > 0 && this.accepting) {
          this.timer ??= setTimeout(() => this.kick(), this.opts.flushIntervalMs);
        }
      });
  }

  private async drain(): Promise<void> {
    while (this.accepting && this.pendingBytes > 0) {
      const chunk = this.takeChunk();
      await this.send(chunk);
    }
  }

  /** Takes up to maxRequestBytes off the buffer, cut on a character boundary. */
  private takeChunk(): string {
    const all = this.pending.join("");
    this.pending = [];
    this.pendingBytes = 0;
    const buf = Buffer.from(all, "utf8");
    if (buf.length <= this.opts.maxRequestBytes) return all;
    let end = this.opts.maxRequestBytes;
    while (end > 0 && ((buf[end] ?? 0) & 0xc0) === 0x80) end--;
    const rest = buf.subarray(end).toString("utf8");
    this.pending = [rest];
    this.pendingBytes = buf.length - end;
    return buf.subarray(0, end).toString("utf8");
  }

  private async send(data: string): Promise<void> {
    const bytes = Buffer.byteLength(data, "utf8");
    let failures = 0;
    let gaps = 0;
    while (!this.closed) {
      try {
        await this.opts.client.appendLog(this.opts.taskId, this.opts.epoch, this.offset, data);
        this.offset += bytes;
        return;
      } catch (err) {
        if (err instanceof KilnError && err.code === "LOG_GAP" && typeof err.details?.size === "number") {
          if (++gaps > MAX_GAPS_IN_A_ROW) throw err;
          this.logger?.warn(
            { offset: this.offset, size: err.details.size },
            "log offset resynced to the hub's",
          );
          this.offset = err.details.size;
          continue;
        }
        if (err instanceof KilnError && FINAL_CODES.has(err.code)) {
          this.dead = true;
          this.pending = [];
          this.pendingBytes = 0;
          this.logger?.info({ code: err.code }, "hub refused the log; dropping further output");
          return;
        }
        if (!isTransientHubError(err)) throw err;
        failures++;
        if (failures === 1) this.logger?.warn({ err: describeError(err) }, "cannot send log; retrying");
        await delay(
          retryDelayMs(failures, this.opts.retryBaseSeconds, this.opts.retryMaxSeconds),
          (this.stopRetrying ??= new AbortController()).signal,
        );
      }
    }
  }
}
