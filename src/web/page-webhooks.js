import { api } from "./api.js";
import { actionButton, clear, h, stateBadge, table, timeEl } from "./dom.js";

/** Webhooks with their recent deliveries and each delivery's attempts; the API keeps them to admins. */
export async function renderWebhooks(ctx) {
  const { main, signal, can } = ctx;
  main.append(h("h1", "Webhooks"));
  if (!can.admin) {
    main.append(h("p.notice", "Webhooks are for admins: sign in with an admin token to see them."));
    return;
  }
  const status = h("p.status", { role: "status" });
  const body = h("div");
  const draw = async () => {
    const hooks = await api("/webhooks", { signal });
    const deliveries = await Promise.all(
      hooks.map((w) => api(`/webhooks/${w.id}/deliveries?limit=20`, { signal })),
    );
    clear(body).append(
      table(
        [
          { label: "id", class: "num", cell: (w) => `#${w.id}` },
          { label: "url", cell: (w) => h("span.mono.url", w.url) },
          { label: "events", cell: (w) => w.events.join(" ") },
          { label: "format", cell: (w) => w.format },
          {
            label: "state",
            cell: (w) => [
              stateBadge(w.enabled ? "enabled" : "disabled"),
              w.disabledReason ? h("div.follow", w.disabledReason) : null,
            ],
          },
          { label: "pending", class: "num", cell: (w) => w.pending },
          { label: "secret", cell: (w) => (w.hasSecret ? "signed" : "") },
        ],
        hooks,
        { empty: "no webhooks; `kiln webhook add URL EVENTS…` adds one" },
      ),
      ...hooks.map((w, i) => webhookCard(w, deliveries[i] ?? [], { status, draw })),
    );
  };
  main.append(
    h(
      "div.actions",
      actionButton("Refresh", () => draw(), { status, testid: "webhooks-refresh" }),
    ),
    status,
    body,
  );
  await draw();
}

function webhookCard(w, deliveries, { status, draw }) {
  return h(
    "section.card",
    { "data-testid": `webhook-${w.id}` },
    h("h2", `#${w.id} `, h("span.mono.url", w.url)),
    w.description ? h("p.follow", w.description) : null,
    h(
      "div.actions",
      actionButton(
        "Send test event",
        async () => {
          const { eventId } = await api(`/webhooks/${w.id}/test`, { method: "POST" });
          status.textContent = `queued test event ${eventId}`;
          // The hub delivers it in the background: look again once it has had a moment.
          setTimeout(() => void draw().catch(() => {}), 1500);
        },
        { status, testid: `webhook-test-${w.id}` },
      ),
      actionButton(
        w.enabled ? "Disable" : "Enable",
        async () => {
          await api(`/webhooks/${w.id}`, { method: "PATCH", body: { enabled: !w.enabled } });
          await draw();
        },
        { danger: w.enabled, status, testid: `webhook-toggle-${w.id}` },
      ),
    ),
    table(
      [
        { label: "delivery", class: "num", cell: (d) => d.id },
        { label: "event", cell: (d) => [`${d.eventType} `, h("span.follow", `#${d.eventId}`)] },
        { label: "state", cell: (d) => stateBadge(d.state) },
        { label: "created", cell: (d) => timeEl(d.createdAt) },
        {
          label: "finished",
          cell: (d) =>
            d.completedAt
              ? timeEl(d.completedAt)
              : d.nextAttemptAt
                ? ["next ", timeEl(d.nextAttemptAt)]
                : "—",
        },
        { label: "attempts", cell: (d) => attemptList(d) },
      ],
      deliveries,
      { empty: "no deliveries yet", caption: "Latest deliveries, newest first" },
    ),
  );
}

/** Each attempt: when, how long, and the answer (status) or the error. */
function attemptList(d) {
  if (d.attemptLog.length === 0) return "none yet";
  return h(
    "ol.attempts",
    { "data-testid": `attempts-${d.id}` },
    d.attemptLog.map((a) =>
      h(
        "li",
        timeEl(a.startedAt),
        ` · ${a.durationMs} ms · `,
        a.status !== null && a.status !== undefined
          ? h(a.status >= 200 && a.status < 300 ? "span.ok" : "span.bad", `HTTP ${a.status}`)
          : null,
        a.error ? h("span.bad", ` ${a.error}`) : null,
      ),
    ),
  );
}
