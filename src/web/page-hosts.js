import { api } from "./api.js";
import { actionButton, clear, h, stateBadge, table, timeEl } from "./dom.js";
import { loadBar } from "./page-dashboard.js";

/** Hosts with their load; admins may enable and disable them. */
export async function renderHosts(ctx) {
  const { main, signal, can } = ctx;
  const body = h("div");
  const status = h("p.status", { role: "status" });
  main.append(h("h1", "Hosts"), status, body);
  const draw = async () => {
    const hosts = await api("/hosts", { signal });
    const toggle = (x) =>
      actionButton(
        x.enabled ? "Disable" : "Enable",
        async () => {
          await api(`/hosts/${encodeURIComponent(x.name)}`, {
            method: "PATCH",
            body: { enabled: !x.enabled },
          });
          await draw();
        },
        { danger: x.enabled, status, testid: `toggle-${x.name}` },
      );
    clear(body).append(
      table(
        [
          { label: "host", cell: (x) => [x.name, x.description ? h("div.follow", x.description) : null] },
          {
            label: "state",
            cell: (x) => [
              stateBadge(!x.enabled ? "disabled" : x.ready ? "ready" : "offline"),
              x.disabledReason ? h("div.follow", x.disabledReason) : null,
            ],
          },
          { label: "arches", cell: (x) => x.arches.join(" ") },
          { label: "channels", cell: (x) => x.channels.join(" ") },
          { label: "load", cell: (x) => loadBar(x.load, x.capacity) },
          { label: "last heartbeat", cell: (x) => timeEl(x.lastSeenAt) },
          ...(can.admin ? [{ label: "", cell: (x) => toggle(x) }] : []),
        ],
        hosts,
        { empty: "no hosts" },
      ),
    );
  };
  await draw();
}
