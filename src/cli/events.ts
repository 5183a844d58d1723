/** `kiln events`: the event outbox, listed or followed. */
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import { readSse, SseParser } from "../client/sse.js";
import { KilnError } from "../errors/catalogue.js";
import type { EventJson } from "../events/event-json.js";
import { clientFor, parseInteger } from "./context.js";
import { formatTimestamp, printJson, write, type TextSink } from "./output.js";
import { reconnectDelay } from "./task-logs.js";
import { isTransient } from "./task-watch.js";

const NO_TIMEOUT = 2_147_483_647;

interface EventsFlags {
  since?: number;
  type?: string;
  limit?: number;
  follow?: boolean;
  json?: boolean;
}

function brief(value: unknown): string {
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    if (typeof o.message === "string") return JSON.stringify(o.message);
    return JSON.stringify(value);
  }
  return typeof value === "string" && /\s/.test(value) ? JSON.stringify(value) : String(value);
}

/** `ID  TIME  TYPE  key=value…  (by ACTOR)` */
export function formatEvent(event: EventJson): string {
  const fields = Object.entries(event.data)
    .map(([k, v]) => `${k}=${brief(v)}`)
    .join(" ");
  const by = event.actor ? `  (by ${event.actor})` : "";
  return `${event.id}  ${formatTimestamp(event.createdAt)}  ${event.type}  ${fields}${by}\n`;
}

async function print(event: EventJson, json: boolean | undefined, out: TextSink): Promise<void> {
  await write(json ? `${JSON.stringify(event)}\n` : formatEvent(event), out);
}

/**
 * Follows the event stream from `since`, reconnecting with Last-Event-ID when it drops (a hub
 * restart) so nothing is missed or shown twice. Runs until interrupted.
 */
export async function followEvents(
  client: KilnClient,
  opts: {
    since: number;
    type?: string;
    json?: boolean;
    out?: TextSink;
    err?: TextSink;
    signal?: AbortSignal;
  },
): Promise<void> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? process.stderr;
  const parser = new SseParser();
  parser.lastEventId = String(opts.since);
  let failures = 0;
  let lost = false;
  let connected = false;
  const qs = opts.type ? `?type=${encodeURIComponent(opts.type)}` : "";
  while (!opts.signal?.aborted) {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    opts.signal?.addEventListener("abort", onAbort);
    const idle = setTimeout(() => controller.abort(), 45_000);
    try {
      const res = await client.raw("GET", `/api/v1/events/stream${qs}`, undefined, {
        headers: { accept: "text/event-stream", "last-event-id": parser.lastEventId },
        signal: controller.signal,
        timeoutMs: NO_TIMEOUT,
      });
      connected = true;
      if (!res.body) throw new KilnError("INTERNAL", "the hub answered the event stream without a body");
      for await (const message of readSse(res.body, { parser, onChunk: () => idle.refresh() })) {
        if (lost) {
          errOut.write(`kiln: reconnected to ${client.hub}; following again\n`);
          lost = false;
        }
        failures = 0;
        await print(JSON.parse(message.data) as EventJson, opts.json, out);
      }
    } catch (err) {
      if (opts.signal?.aborted) return;
      if (!connected || (err instanceof KilnError && !isTransient(err))) throw err;
    } finally {
      clearTimeout(idle);
      opts.signal?.removeEventListener("abort", onAbort);
      controller.abort();
    }
    failures++;
    if (!lost) {
      lost = true;
      errOut.write(`kiln: lost the event stream from ${client.hub}; reconnecting…\n`);
    }
    await new Promise((r) => setTimeout(r, reconnectDelay(failures, parser.retry ?? 1000)));
  }
}

export function registerEventsCommand(program: Command): void {
  program
    .command("events")
    .description(
      "List events (every state change: tasks, builds, tags, publications, hosts, webhooks), or follow them with -f",
    )
    .option("--since <id>", "events after this id (default: the newest --limit)", parseInteger(0))
    .option("--type <types>", "only these types, comma-separated; NOUN.* matches a family (build.*)")
    .option(
      "--limit <n>",
      "how many to list (default 50; with --since, at most 1000 a page)",
      parseInteger(1, 1000),
    )
    .option("-f, --follow", "keep printing events as they happen")
    .option("--json", "print JSON (with -f, one event per line)")
    .action(async (opts: EventsFlags, cmd: Command) => {
      const client = clientFor(cmd);
      const limit = opts.limit ?? 50;
      const type = opts.type;
      let since: number;
      if (opts.since !== undefined) {
        const page = await client.listEvents({ since: opts.since, limit, ...(type ? { type } : {}) });
        if (opts.json && !opts.follow) return printJson(page);
        for (const e of page.events) await print(e, opts.json, process.stdout);
        since = page.next;
      } else {
        const page = await client.listEvents({ newest: true, limit, ...(type ? { type } : {}) });
        if (opts.json && !opts.follow) return printJson(page);
        for (const e of page.events) await print(e, opts.json, process.stdout);
        // Nothing shown (a filter matched nothing yet): follow from the newest event of any type.
        since =
          page.events.length > 0 ? page.next : (await client.listEvents({ newest: true, limit: 1 })).next;
      }
      if (!opts.follow) return;
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      await followEvents(client, { since, ...(type ? { type } : {}), json: opts.json, signal: stop.signal });
    });
}
