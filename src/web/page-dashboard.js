import { api, followEvents } from "./api.js";
import { clear, h, link, stateBadge, table, timeEl } from "./dom.js";
import { summarizeQueue } from "./view-model.js";

const DAY = 86_400_000;

/** The farm at a glance; refreshed when an event arrives (SSE) and every few seconds anyway. */
export async function renderDashboard(ctx) {
  const { main, signal } = ctx;
  const live = h("span.live-dot", { title: "live updates" });
  main.append(h("h1", live, "Dashboard"));
  const body = h("div#dashboard");
  main.append(body);

  let timer;
  let running = false;
  let again = false;
  const refresh = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      const view = await load(signal);
      if (!signal.aborted) clear(body).append(view);
    } catch (err) {
      if (!signal.aborted)
        clear(body).append(h("div.error-box", { role: "alert" }, String(err.message ?? err)));
    } finally {
      running = false;
      if (again && !signal.aborted) {
        again = false;
        schedule(100);
      }
    }
  };
  const schedule = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(() => void refresh(), ms);
  };
  await refresh();
  // Heartbeats and loads change without events: a slow poll covers them, a fast one when the
  // hub has no event stream to follow.
  let poll = setInterval(() => void refresh(), 5000);
  signal.addEventListener("abort", () => {
    clearInterval(poll);
    clearTimeout(timer);
  });
  const pollFast = () => {
    live.classList.remove("on");
    clearInterval(poll);
    if (!signal.aborted) poll = setInterval(() => void refresh(), 2000);
  };
  latestEventId(signal)
    .then((since) =>
      followEvents(`/events/stream?since=${since}`, {
        signal,
        onOpen: () => live.classList.add("on"),
        onEvent: () => schedule(250),
      }),
    )
    .catch(pollFast);
}

/**
 * The newest event id, so the stream starts at the present rather than replaying history:
 * the API lists events after an id, so probe upwards, then bisect (a few tiny calls).
 */
async function latestEventId(signal) {
  const after = async (id) => (await api(`/events?since=${id}&limit=1`, { signal })).events.length > 0;
  let lo = 0;
  let hi = 1;
  while (await after(hi)) {
    lo = hi;
    hi *= 4;
  }
  // Invariant: an event exists after lo (or lo is 0), none after hi.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await after(mid)) lo = mid;
    else hi = mid;
  }
  return (await after(lo)) ? hi : lo;
}

async function load(signal) {
  const now = Date.now();
  const [queued, failed, hosts, builds, pubs, stats] = await Promise.all([
    api("/tasks?state=free,assigned,open&limit=1000", { signal }),
    api("/tasks?state=failed&limit=100", { signal }),
    api("/hosts", { signal }),
    api("/builds?limit=10", { signal }),
    api("/publish", { signal }),
    // Optional: an older hub has no stats, and the rest of the dashboard still works.
    api("/stats?since=1d", { signal }).catch(() => null),
  ]);
  const hostName = new Map(hosts.map((x) => [x.id, x.name]));
  const waiting = queued.tasks.filter((t) => !(t.state === "open" && t.waiting));
  const summary = summarizeQueue(waiting);
  const runningTasks = queued.tasks.filter((t) => t.state === "open" && !t.waiting);
  const recentFailures = failed.tasks.filter((t) => t.completedAt && now - Date.parse(t.completedAt) < DAY);
  const more = queued.next ? "+" : "";

  const countTable = (title, rows) =>
    h(
      "div",
      h("h3.sr", title),
      table(
        [
          { label: title, cell: (r) => r[0] },
          { label: "tasks", class: "num", cell: (r) => `${r[1]}${more}` },
        ],
        rows,
        { empty: "queue empty" },
      ),
    );

  const taskCols = [
    { label: "id", cell: (t) => link(`#/tasks/${t.id}`, `#${t.id}`) },
    { label: "method", cell: (t) => t.method },
    { label: "arch", cell: (t) => t.arch ?? "noarch" },
    { label: "host", cell: (t) => (t.hostId ? (hostName.get(t.hostId) ?? t.hostId) : "—") },
    { label: "state", cell: (t) => stateBadge(t.state) },
    { label: "started", cell: (t) => timeEl(t.startedAt) },
  ];

  return h(
    "div.grid",
    h(
      "section.card#queue",
      { "aria-labelledby": "queue-h" },
      h("h2#queue-h", "Queue"),
      h(
        "div.grid",
        countTable("state", summary.byState),
        countTable("arch", summary.byArch),
        countTable("channel", summary.byChannel),
      ),
    ),
    h(
      "section.card#running",
      { "aria-labelledby": "running-h" },
      h("h2#running-h", `Running (${runningTasks.length})`),
      table(taskCols, runningTasks.slice(0, 20), { empty: "nothing running" }),
    ),
    h(
      "section.card#hosts",
      { "aria-labelledby": "hosts-h" },
      h("h2#hosts-h", "Hosts"),
      table(
        [
          { label: "host", cell: (x) => x.name },
          {
            label: "state",
            cell: (x) => stateBadge(!x.enabled ? "disabled" : x.ready ? "ready" : "offline"),
          },
          { label: "load", cell: (x) => loadBar(x.load, x.capacity) },
          { label: "seen", cell: (x) => timeEl(x.lastSeenAt) },
        ],
        hosts,
        { empty: "no hosts yet" },
      ),
    ),
    h(
      "section.card#failures",
      { "aria-labelledby": "failures-h" },
      h("h2#failures-h", `Failures in the last day (${recentFailures.length})`),
      table(
        [
          { label: "id", cell: (t) => link(`#/tasks/${t.id}`, `#${t.id}`) },
          { label: "method", cell: (t) => t.method },
          { label: "error", cell: (t) => (t.error ? `${t.error.code}: ${t.error.message}` : "") },
          { label: "when", cell: (t) => timeEl(t.completedAt) },
        ],
        recentFailures.slice(0, 20),
        { empty: "no failures" },
      ),
    ),
    h(
      "section.card#builds",
      { "aria-labelledby": "builds-h" },
      h("h2#builds-h", "Recent builds"),
      table(
        [
          { label: "build", cell: (b) => link(`#/builds/${b.id}`, b.nvr) },
          { label: "state", cell: (b) => stateBadge(b.state) },
          { label: "owner", cell: (b) => b.owner },
          { label: "started", cell: (b) => timeEl(b.createdAt) },
        ],
        builds,
        { empty: "no builds yet" },
      ),
    ),
    stats &&
      h(
        "section.card#health",
        { "aria-labelledby": "health-h" },
        h("h2#health-h", "Build health, last day"),
        h(
          "dl.fields",
          [
            [
              "builds",
              `${stats.builds.total} (${stats.builds.complete} complete, ${stats.builds.failed} failed)`,
            ],
            [
              "success rate",
              stats.builds.successRate === null ? "—" : `${Math.round(stats.builds.successRate * 100)} %`,
            ],
            ["queue wait", percentiles(stats.queueWait)],
            ["build time", percentiles(stats.buildTime)],
            [
              "flakiest",
              stats.flakiest.length
                ? stats.flakiest
                    .slice(0, 5)
                    .map((f) => `${f.package} (${f.retries} retries)`)
                    .join(", ")
                : "none",
            ],
          ].map(([k, v]) => [h("dt", k), h("dd", v)]),
        ),
      ),
    h(
      "section.card#publications",
      { "aria-labelledby": "pubs-h" },
      h("h2#pubs-h", "Recent publications"),
      table(
        [
          { label: "publication", cell: (p) => link(pubHref(p), `${p.prefix}/${p.distribution}`) },
          { label: "generation", class: "num", cell: (p) => p.liveGeneration ?? "—" },
          { label: "updated", cell: (p) => timeEl(p.updatedAt) },
        ],
        [...pubs].sort((a, b) => b.updatedAt.localeCompare(a.updatedAt)).slice(0, 10),
        { empty: "nothing published yet" },
      ),
    ),
  );
}

function percentiles(d) {
  return d.count === 0 ? "—" : `p50 ${d.p50.toFixed(1)} s, p95 ${d.p95.toFixed(1)} s (${d.count})`;
}

export function pubHref(p) {
  return `#/publish/${encodeURIComponent(p.prefix)}/${encodeURIComponent(p.distribution)}`;
}

export function loadBar(load, capacity) {
  const frac = capacity > 0 ? Math.min(1, load / capacity) : 0;
  const inner = h("span");
  inner.style.width = `${Math.round(frac * 100)}%`;
  return h(
    "div",
    { class: "load" },
    h(
      frac >= 1 ? "div.bar.full" : "div.bar",
      {
        role: "meter",
        "aria-valuemin": 0,
        "aria-valuemax": capacity,
        "aria-valuenow": load,
        "aria-label": "load",
      },
      inner,
    ),
    h("span.follow", `${load} / ${capacity}`),
  );
}
