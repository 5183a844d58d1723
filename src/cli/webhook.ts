/** `kiln webhook …`: signed HTTP notifications of events (admin only). */
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import { KilnError } from "../errors/catalogue.js";
import type { WebhookDeliveryJson, WebhookFormat, WebhookInput, WebhookJson } from "../events/event-json.js";
import { clientFor, parseId, parseInteger, parseList } from "./context.js";
import { formatFields, formatTimestamp, printJson, printTable } from "./output.js";

interface WebhookFlags {
  events?: string[];
  secret?: string | undefined;
  noSecret?: boolean;
  format?: string;
  description?: string;
  enable?: boolean;
  disable?: boolean;
  url?: string;
  json?: boolean;
}

function state(hook: WebhookJson): string {
  return hook.enabled ? "enabled" : "disabled";
}

export function formatWebhook(hook: WebhookJson): string {
  return formatFields([
    ["webhook", String(hook.id)],
    ["url", hook.url],
    ["events", hook.events.join(", ")],
    ["format", hook.format],
    ["signed", hook.hasSecret ? "yes (X-Kiln-Signature)" : "no"],
    ["state", state(hook)],
    ["why disabled", hook.disabledReason],
    ["pending", hook.pending],
    ["description", hook.description],
    ["created", `${formatTimestamp(hook.createdAt)}${hook.createdBy ? ` by ${hook.createdBy}` : ""}`],
  ]);
}

function formatDelivery(d: WebhookDeliveryJson): string {
  const head = `delivery ${d.id} ${d.uuid}  event ${d.eventId} ${d.eventType}  ${d.state}${
    d.state === "pending" && d.nextAttemptAt ? ` (next try ${formatTimestamp(d.nextAttemptAt)})` : ""
  }\n`;
  const lines = d.attemptLog.map((a) => {
    const outcome = a.status !== null ? `HTTP ${a.status}` : "no answer";
    const why = a.error && a.status === null ? `: ${a.error}` : "";
    const answer = a.response ? `  ${JSON.stringify(a.response.slice(0, 120))}` : "";
    return `  #${a.attempt}  ${formatTimestamp(a.startedAt)}  ${outcome}${why}  ${a.durationMs} ms${answer}\n`;
  });
  return head + (lines.length > 0 ? lines.join("") : "  (not tried yet)\n");
}

function inputFrom(opts: WebhookFlags): WebhookInput {
  if (opts.enable && opts.disable) {
    throw new KilnError("BAD_REQUEST", "give --enable or --disable, not both");
  }
  const input: WebhookInput = {};
  if (opts.url !== undefined) input.url = opts.url;
  if (opts.events !== undefined) input.events = opts.events;
  if (opts.secret !== undefined) input.secret = opts.secret;
  if (opts.noSecret) input.secret = null;
  if (opts.format !== undefined) input.format = opts.format as WebhookFormat;
  if (opts.description !== undefined) input.description = opts.description;
  if (opts.enable) input.enabled = true;
  if (opts.disable) input.enabled = false;
  return input;
}

/** Waits for the first attempt at a delivery of this event, up to `ms`. */
async function firstAttempt(
  client: KilnClient,
  id: number,
  eventId: number,
  ms: number,
): Promise<WebhookDeliveryJson | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const [d] = await client.webhookDeliveries(id, { event: eventId, limit: 1 });
    if (d && d.attemptLog.length > 0) return d;
    if (Date.now() > deadline) return d;
    await new Promise((r) => setTimeout(r, 250));
  }
}

export function registerWebhookCommand(program: Command): void {
  const webhook = program.command("webhook").description("Send events to HTTP receivers, signed (admin)");

  webhook
    .command("add")
    .description("Add a webhook: every matching event is POSTed to URL, in order, retried for up to 24 h")
    .argument("<url>", "the receiver's http:// or https:// URL")
    .requiredOption(
      "--events <types>",
      "event types or NOUN.* patterns, comma-separated (build.failed,publish.*)",
      parseList,
    )
    .option("--secret <secret>", "sign each delivery: X-Kiln-Signature: sha256=HMAC(secret, timestamp.body)")
    .option("--format <format>", "json (the event), slack or discord (a one-line message)", "json")
    .option("--description <text>", "a note about the webhook")
    .option("--json", "print the webhook as JSON")
    .action(async (url: string, opts: WebhookFlags & { events: string[] }, cmd: Command) => {
      const hook = await clientFor(cmd).addWebhook({ ...inputFrom(opts), url, events: opts.events });
      if (opts.json) return printJson(hook);
      process.stdout.write(`Webhook ${hook.id} added: ${hook.events.join(", ")} → ${hook.url}\n`);
    });

  webhook
    .command("list")
    .description("List webhooks")
    .option("--json", "print JSON")
    .action(async (opts: WebhookFlags, cmd: Command) => {
      const hooks = await clientFor(cmd).listWebhooks();
      if (opts.json) return printJson(hooks);
      printTable(hooks, [
        { header: "id", value: (h) => h.id, align: "right" },
        { header: "state", value: state },
        { header: "format", value: (h) => h.format },
        { header: "signed", value: (h) => (h.hasSecret ? "yes" : "no") },
        { header: "pending", value: (h) => h.pending, align: "right" },
        { header: "events", value: (h) => h.events.join(",") },
        { header: "url", value: (h) => h.url },
      ]);
    });

  webhook
    .command("show")
    .description("Show a webhook")
    .argument("<id>", "the webhook's id", parseId)
    .option("--json", "print JSON")
    .action(async (id: number, opts: WebhookFlags, cmd: Command) => {
      const hook = await clientFor(cmd).getWebhook(id);
      if (opts.json) return printJson(hook);
      process.stdout.write(formatWebhook(hook));
    });

  webhook
    .command("edit")
    .description("Change a webhook; --enable also resumes one disabled after failing deliveries")
    .argument("<id>", "the webhook's id", parseId)
    .option("--url <url>", "a new receiver URL")
    .option("--events <types>", "new event types or NOUN.* patterns, comma-separated", parseList)
    .option("--secret <secret>", "a new signing secret")
    .option("--no-secret", "stop signing")
    .option("--format <format>", "json, slack or discord")
    .option("--description <text>", "a note about the webhook")
    .option("--enable", "enable it (pending deliveries go out at once)")
    .option("--disable", "disable it (events wait until it is enabled)")
    .option("--json", "print JSON")
    .action(
      async (id: number, opts: Omit<WebhookFlags, "secret"> & { secret?: string | false }, cmd: Command) => {
        // Commander gives `secret: false` for --no-secret.
        const flags: WebhookFlags = { ...opts, secret: undefined, noSecret: opts.secret === false };
        if (typeof opts.secret === "string") flags.secret = opts.secret;
        const hook = await clientFor(cmd).editWebhook(id, inputFrom(flags));
        if (opts.json) return printJson(hook);
        process.stdout.write(formatWebhook(hook));
      },
    );

  webhook
    .command("remove")
    .description("Remove a webhook and its delivery history")
    .argument("<id>", "the webhook's id", parseId)
    .option("--json", "print the removed webhook as JSON")
    .action(async (id: number, opts: WebhookFlags, cmd: Command) => {
      const hook = await clientFor(cmd).removeWebhook(id);
      if (opts.json) return printJson(hook);
      process.stdout.write(`Webhook ${hook.id} removed.\n`);
    });

  webhook
    .command("test")
    .description("Send a webhook.test event to this webhook and show how the receiver answered")
    .argument("<id>", "the webhook's id", parseId)
    .option("--wait <seconds>", "how long to wait for the first attempt (default 30)", parseInteger(0, 3600))
    .option("--json", "print the delivery as JSON")
    .action(async (id: number, opts: WebhookFlags & { wait?: number }, cmd: Command) => {
      const client = clientFor(cmd);
      const { eventId } = await client.testWebhook(id);
      const delivery = await firstAttempt(client, id, eventId, (opts.wait ?? 30) * 1000);
      if (opts.json) return printJson(delivery ?? { eventId, state: "queued" });
      if (!delivery || delivery.attemptLog.length === 0) {
        process.stdout.write(
          `Test event ${eventId} queued; not tried yet (earlier deliveries may be waiting). See \`kiln webhook deliveries ${id}\`.\n`,
        );
        return;
      }
      process.stdout.write(formatDelivery(delivery));
      if (delivery.state !== "delivered") process.exitCode = 1;
    });

  webhook
    .command("deliveries")
    .description("A webhook's recent deliveries, newest first, with every attempt (status, duration, answer)")
    .argument("<id>", "the webhook's id", parseId)
    .option("--limit <n>", "how many (default 20)", parseInteger(1, 500))
    .option("--json", "print JSON")
    .action(async (id: number, opts: WebhookFlags & { limit?: number }, cmd: Command) => {
      const deliveries = await clientFor(cmd).webhookDeliveries(id, opts.limit ? { limit: opts.limit } : {});
      if (opts.json) return printJson(deliveries);
      if (deliveries.length === 0) process.stdout.write("No deliveries yet.\n");
      for (const d of deliveries) process.stdout.write(formatDelivery(d));
    });
}
