import { api } from "./api.js";
import { h, link, s, table } from "./dom.js";
import { chartLine, formatSeconds } from "./view-model.js";

/** The windows on offer, each cut into buckets of a readable size. */
const WINDOWS = [
  ["1d", "last day", 24],
  ["7d", "last week", 28],
  ["30d", "last 30 days", 30],
];

// The plot's size in SVG units, about its size on screen in a card at 1280 px wide.
const W = 300;
const H = 120;
const LEFT = 56;
const TOP = 10;
const BOTTOM = 24;

/** Build health over a window: success rate, queue wait and build time per bucket, flaky packages. */
export async function renderHealth(ctx) {
  const { main, signal } = ctx;
  const [since, label, buckets] = WINDOWS.find(([key]) => key === ctx.query.get("since")) ?? WINDOWS[1];
  const stats = await api(`/stats?since=${since}&buckets=${buckets}`, { signal });
  const series = stats.series ?? [];
  const pct = (v) => (v === null ? "—" : `${Math.round(v * 100)} %`);
  main.append(
    h("h1", "Health"),
    h(
      "nav.pager",
      { "aria-label": "time window" },
      WINDOWS.map(([key, text]) =>
        key === since ? h("strong", { "aria-current": "true" }, text) : link(`#/health?since=${key}`, text),
      ),
    ),
    h(
      "section.card",
      h("h2", `Builds, ${label}`),
      h(
        "dl.fields",
        [
          ["submitted", stats.builds.total],
          ["complete", stats.builds.complete],
          ["failed", stats.builds.failed],
          ["success rate", pct(stats.builds.successRate)],
          [
            "queue wait p50 / p95",
            `${formatSeconds(stats.queueWait.p50)} / ${formatSeconds(stats.queueWait.p95)}`,
          ],
          [
            "build time p50 / p95",
            `${formatSeconds(stats.buildTime.p50)} / ${formatSeconds(stats.buildTime.p95)}`,
          ],
        ].map(([k, v]) => [h("dt", k), h("dd", String(v))]),
      ),
    ),
    h(
      "div.grid",
      chartCard("Success rate", "chart-success", series, (b) => b.successRate, {
        max: 1,
        format: pct,
      }),
      chartCard("Queue wait (median)", "chart-wait", series, (b) => b.queueWaitP50, {
        format: formatSeconds,
      }),
      chartCard("Build time (median)", "chart-build", series, (b) => b.buildTimeP50, {
        format: formatSeconds,
      }),
    ),
    h(
      "div.grid",
      h(
        "section.card",
        h("h2", "Flakiest packages"),
        h("p.follow", "Build steps that failed and then passed on a retry."),
        flakyChart(stats.flakiest),
        table(
          [
            { label: "package", cell: (f) => f.package },
            { label: "flaky steps", class: "num", cell: (f) => f.flakySteps },
            { label: "retries", class: "num", cell: (f) => f.retries },
          ],
          stats.flakiest,
          { empty: "no flaky packages in this window" },
        ),
      ),
      h(
        "section.card",
        h("h2", "Slowest packages"),
        table(
          [
            { label: "package", cell: (x) => x.package },
            { label: "builds", class: "num", cell: (x) => x.builds },
            { label: "p50", class: "num", cell: (x) => formatSeconds(x.p50) },
            { label: "max", class: "num", cell: (x) => formatSeconds(x.max) },
          ],
          stats.slowest,
          { empty: "no complete builds in this window" },
        ),
      ),
      h(
        "section.card",
        h("h2", "Failures by host"),
        table(
          [
            { label: "host", cell: (x) => x.host },
            { label: "failures", class: "num", cell: (x) => x.failures },
            { label: "infrastructure", class: "num", cell: (x) => x.infra },
          ],
          stats.hostFailures,
          { empty: "no failed attempts in this window" },
        ),
      ),
    ),
  );
}

/** A card with a line chart of one value per bucket, gaps where a bucket had nothing. */
function chartCard(title, testid, series, pick, { max, format }) {
  const values = series.map(pick);
  const line = chartLine(values, { width: W, height: H, max });
  const known = line.points.map((p) => format(p.value));
  const svg = s("svg", {
    viewBox: `0 0 ${LEFT + W + 12} ${TOP + H + BOTTOM}`,
    class: "chart",
    role: "img",
    "aria-label": `${title} per bucket: ${known.length ? known.join(", ") : "no data"}`,
    "data-testid": testid,
  });
  // Grid lines at 0, half and the top, labelled on the left.
  for (const f of [0, 0.5, 1]) {
    const y = TOP + H - f * H;
    svg.append(
      s("line", { class: "axis", x1: LEFT, x2: LEFT + W, y1: y, y2: y }),
      s("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end", fill: "#666" }, format(f * line.max)),
    );
  }
  const first = series[0];
  const last = series.at(-1);
  if (first && last) {
    svg.append(
      s("text", { x: LEFT, y: TOP + H + 18, fill: "#666" }, shortDate(first.start)),
      s("text", { x: LEFT + W, y: TOP + H + 18, "text-anchor": "end", fill: "#666" }, shortDate(last.end)),
    );
  }
  const plot = s("g", { transform: `translate(${LEFT} ${TOP})` });
  for (const d of line.paths) plot.append(s("path", { class: "chart-line", d }));
  for (const p of line.points) {
    const b = series[p.i];
    plot.append(
      s(
        "circle",
        { class: "chart-point", cx: p.x, cy: p.y, r: 3 },
        s(
          "title",
          {},
          `${shortDate(b.start)} – ${shortDate(b.end)}: ${format(p.value)} (${b.builds} builds)`,
        ),
      ),
    );
  }
  svg.append(plot);
  return h(
    "section.card",
    h("h2", title),
    h("div.svg-wrap", svg),
    known.length ? null : h("p.empty", "no data in this window"),
  );
}

/** Horizontal bars: each flaky package's count of steps that needed a retry. */
function flakyChart(flakiest) {
  if (flakiest.length === 0) return null;
  const rowH = 22;
  const labelW = 150;
  const barW = 170;
  const top = Math.max(...flakiest.map((f) => f.flakySteps));
  const svg = s("svg", {
    viewBox: `0 0 ${labelW + barW + 40} ${flakiest.length * rowH + 4}`,
    class: "chart",
    role: "img",
    "aria-label": `flakiest packages: ${flakiest.map((f) => `${f.package} ${f.flakySteps}`).join(", ")}`,
    "data-testid": "chart-flaky",
  });
  flakiest.forEach((f, i) => {
    const y = i * rowH + 2;
    const w = Math.max(2, (f.flakySteps / top) * barW);
    svg.append(
      s(
        "text",
        { x: labelW - 6, y: y + 14, "text-anchor": "end" },
        f.package.length > 22 ? f.package.slice(0, 21) + "…" : f.package,
      ),
      s("rect", { class: "chart-bar", x: labelW, y, width: w, height: rowH - 6, rx: 2 }),
      s("text", { x: labelW + w + 4, y: y + 14, fill: "#666" }, f.flakySteps),
    );
  });
  return h("div.svg-wrap", svg);
}

function shortDate(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getMonth() + 1}/${d.getDate()} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
