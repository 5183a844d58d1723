import { createHmac } from "node:crypto";
import { VERSION } from "../version.js";
import type { EventJson, WebhookFormat } from "./event-json.js";

/** One line that says what happened, for chat receivers (Slack, Discord). */
export function summarizeEvent(event: EventJson): string {
  const d = event.data;
  const str = (key: string): string | undefined => {
    const v = d[key];
    return typeof v === "string" || typeof v === "number" ? String(v) : undefined;
  };
  const subject =
    str("nvr") ??
    (str("prefix") !== undefined || str("distribution") !== undefined
      ? `${str("prefix") ?? "."}/${str("distribution") ?? "?"}`
      : undefined) ??
    str("tag") ??
    str("repo") ??
    str("snapshot") ??
    str("host") ??
    (str("method") !== undefined ? `${str("method")} task ${str("taskId") ?? ""}`.trim() : undefined) ??
    str("url") ??
    "";
  const extra = [
    str("buildId") !== undefined ? `build ${str("buildId")}` : undefined,
    str("reason"),
    typeof d.error === "object" && d.error !== null && "message" in d.error
      ? String(d.error.message)
      : undefined,
  ].filter((x): x is string => x !== undefined);
  const by = event.actor ? ` by ${event.actor}` : "";
  return `[kiln] ${event.type}${subject ? `: ${subject}` : ""}${extra.length ? ` (${extra.join("; ")})` : ""}${by} — event ${event.id}`;
}

/** The body a receiver of this format expects: the event itself, or a chat message about it. */
export function webhookBody(format: WebhookFormat, event: EventJson): string {
  switch (format) {
    case "json":
      return JSON.stringify(event);
    case "slack":
      return JSON.stringify({ text: summarizeEvent(event) });
    case "discord":
      return JSON.stringify({ content: summarizeEvent(event), allowed_mentions: { parse: [] } });
  }
}

/** `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as X-Kiln-Signature carries it. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** The headers of one attempt; `timestamp` is in seconds since the epoch. */
export function webhookHeaders(opts: {
  event: EventJson;
  delivery: string;
  timestamp: number;
  body: string;
  secret: string | null;
}): Record<string, string> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "user-agent": `Kiln-Hookshot/${VERSION}`,
    "x-kiln-event": opts.event.type,
    "x-kiln-delivery": opts.delivery,
    "x-kiln-timestamp": String(opts.timestamp),
  };
  if (opts.secret) headers["x-kiln-signature"] = signWebhook(opts.secret, opts.timestamp, opts.body);
  return headers;
}
