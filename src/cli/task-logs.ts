/** `kiln task logs -f`: a task's log over server-sent events, surviving hub restarts. */
import { setTimeout as sleep } from "node:timers/promises";
import type { KilnClient } from "../client/client.js";
import { readSse, SseParser } from "../client/sse.js";
import type { TaskError, TaskState } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { write, type TextSink } from "./output.js";
import { isTransient } from "./task-watch.js";

/** The longest timer Node allows: the stream lives as long as the task; idleness is watched apart. */
const NO_TIMEOUT = 2_147_483_647;

interface LogChunk {
  epoch: number;
  offset: number;
  data: string;
}

/** Where the output has got to: the next byte expected of which attempt's log. */
export interface LogPosition {
  epoch: number;
  offset: number;
}

/**
 * What of a chunk is new given what was already printed: the hub resumes exactly from
 * Last-Event-ID, but a chunk seen twice (a replay across a reconnect) must not print twice.
 */
export function unseenPart(chunk: LogChunk, seen: LogPosition | undefined): string | undefined {
  if (!seen || chunk.epoch > seen.epoch) return chunk.data;
  if (chunk.epoch < seen.epoch) return undefined;
  const bytes = Buffer.from(chunk.data, "utf8");
  const end = chunk.offset + bytes.length;
  if (end <= seen.offset) return undefined;
  if (chunk.offset >= seen.offset) return chunk.data;
  return bytes.subarray(seen.offset - chunk.offset).toString("utf8");
}

/** Full jitter between half and all of an exponentially growing delay, capped at 30 s. */
export function reconnectDelay(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const cap = Math.min(30_000, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(cap / 2 + (random() * cap) / 2);
}

function parseData<T>(data: string, event: string): T {
  try {
    return JSON.parse(data) as T;
  } catch {
    throw new KilnError("INTERNAL", `the hub sent a malformed ${event} event: ${data.slice(0, 200)}`);
  }
}

/** A broken stream (reset, abort by the idle watchdog) is worth a reconnect; an API error is not. */
function isRetryable(err: unknown): boolean {
  return err instanceof KilnError ? isTransient(err) : true;
}

/**
 * Follows the log until the task is final and its log drained. Returns the exit code: 0 when
 * the task closed, 1 when it failed or was canceled.
 */
export async function followLog(
  client: KilnClient,
  id: number,
  opts: { epoch?: number; out?: TextSink; err?: TextSink; idleMs?: number } = {},
): Promise<number> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? process.stderr;
  const path = `/api/v1/tasks/${id}/logs?follow=1${opts.epoch ? `&epoch=${opts.epoch}` : ""}`;
  const parser = new SseParser();
  let seen: LogPosition | undefined;
  let failures = 0;
  let lost = false;
  // A hub that is down from the start is an error like any other; only a dropped stream is retried.
  let connected = false;

  for (;;) {
    const controller = new AbortController();
    // The hub sends a keep-alive every 15 s: silence for much longer means a dead connection.
    const idle = setTimeout(() => controller.abort(), opts.idleMs ?? 45_000);
    try {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (parser.lastEventId) headers["last-event-id"] = parser.lastEventId;
      const res = await client.raw("GET", path, undefined, {
        headers,
        signal: controller.signal,
        timeoutMs: NO_TIMEOUT,
      });
      connected = true;
      if (!res.body) throw new KilnError("INTERNAL", "the hub answered the log stream without a body");
      for await (const event of readSse(res.body, { parser, onChunk: () => idle.refresh() })) {
        if (lost) {
          errOut.write(`kiln: reconnected to ${client.hub}; following again\n`);
          lost = false;
        }
        failures = 0;
        if (event.event === "log") {
          const chunk = parseData<LogChunk>(event.data, "log");
          if (seen && chunk.epoch > seen.epoch) {
            errOut.write(`kiln: task ${id} was run again; its log from lease epoch ${chunk.epoch} follows\n`);
          }
          const fresh = unseenPart(chunk, seen);
          if (fresh === undefined) continue;
          seen = { epoch: chunk.epoch, offset: chunk.offset + Buffer.byteLength(chunk.data, "utf8") };
          await write(fresh, out);
        } else if (event.event === "end") {
          const end = parseData<{ state: TaskState; error?: TaskError | null }>(event.data, "end");
          if (end.state === "closed") return 0;
          const why = end.error ? `: ${end.error.message} [${end.error.code}]` : "";
          errOut.write(`kiln: task ${id} ${end.state}${why}\n`);
          return 1;
        }
      }
      // The stream ended without `end`: the hub went away (a restart); resume where we were.
    } catch (err) {
      if (!connected || !isRetryable(err)) throw err;
    } finally {
      clearTimeout(idle);
      controller.abort();
    }
    failures++;
    if (!lost) {
      lost = true;
      errOut.write(`kiln: lost the log stream from ${client.hub}; reconnecting…\n`);
    }
    await sleep(reconnectDelay(failures, parser.retry ?? 1000));
  }
}
