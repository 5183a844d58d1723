import { api, ApiError } from "./api.js";
import { h, link, s, table, timeEl } from "./dom.js";
import { layoutGraph, tagHistory } from "./view-model.js";

/** How far back the history looks: the newest tag and package events of the whole farm. */
const HISTORY_EVENTS = 1000;

export async function renderTagList(ctx) {
  const { main, signal } = ctx;
  const tags = await api("/tags", { signal });
  main.append(
    h("h1", "Tags"),
    table(
      [
        { label: "tag", cell: (t) => link(`#/tags/${encodeURIComponent(t.name)}`, t.name) },
        { label: "arches", cell: (t) => (t.arches ? t.arches.join(" ") : "inherited") },
        { label: "perm", cell: (t) => t.perm ?? "—" },
        { label: "locked", cell: (t) => (t.locked ? "yes" : "") },
        { label: "created", cell: (t) => timeEl(t.createdAt) },
      ],
      tags,
      { empty: "no tags" },
    ),
  );
}

export async function renderTag(ctx) {
  const { main, signal } = ctx;
  const name = ctx.params[0];
  const enc = encodeURIComponent(name);
  const [tag, packages, latest, repo, events] = await Promise.all([
    api(`/tags/${enc}`, { signal }),
    api(`/tags/${enc}/packages`, { signal }),
    api(`/tags/${enc}/latest`, { signal }),
    // Only build tags (and tags someone regenerated) have a repository. The history, not
    // /repo: a tag without one is no error the browser should log.
    api(`/tags/${enc}/repos?limit=20`, { signal }).then((l) => l.find((r) => r.state === "ready") ?? null),
    // Events are for signed-in users; a public reader sees the rest of the page.
    api(`/events?type=${encodeURIComponent("tag.*,package.*")}&newest=true&limit=${HISTORY_EVENTS}`, {
      signal,
    }).catch((err) => {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return null;
      throw err;
    }),
  ]);
  // The walk lists each ancestor once; the graph wants every link, so read each ancestor's parents.
  const ancestors = [...new Set(tag.walk.map((w) => w.tag))];
  const details = await Promise.all(ancestors.map((n) => api(`/tags/${encodeURIComponent(n)}`, { signal })));
  const edges = [tag, ...details].flatMap((d) =>
    d.parents.map((p) => ({ from: d.name, to: p.parent, priority: p.priority })),
  );
  main.append(
    h("h1", `Tag ${tag.name}`),
    h(
      "div.grid",
      h(
        "section.card",
        h("h2", "Configuration"),
        h(
          "dl.fields",
          [
            ["arches", tag.config.arches ? tag.config.arches.join(" ") : "none"],
            ["own arches", tag.arches ? tag.arches.join(" ") : "inherited"],
            ["perm", tag.perm ?? "—"],
            ["locked", tag.locked ? "yes" : "no"],
            ["as of event", tag.event],
            [
              "parents",
              tag.parents.length
                ? tag.parents.map((p, i) => [
                    i ? ", " : "",
                    link(`#/tags/${encodeURIComponent(p.parent)}`, p.parent),
                    ` (priority ${p.priority})`,
                  ])
                : "none",
            ],
          ].map(([k, v]) => [h("dt", k), h("dd", v)]),
        ),
      ),
      h("section.card", h("h2", "Inheritance"), drawInheritance(tag, edges)),
    ),
    h("section.card", { "data-testid": "tag-repo" }, h("h2", "Repository"), drawRepo(repo)),
    h(
      "section.card",
      h("h2", "Packages"),
      table(
        [
          { label: "package", cell: (p) => p.package },
          { label: "owner", cell: (p) => p.owner },
          { label: "blocked", cell: (p) => (p.blocked ? "blocked" : "") },
          {
            label: "from",
            cell: (p) => (p.inherited ? link(`#/tags/${encodeURIComponent(p.tag)}`, p.tag) : "this tag"),
          },
        ],
        packages,
        { empty: "no packages listed" },
      ),
    ),
    h(
      "section.card",
      h("h2", "Latest builds"),
      table(
        [
          { label: "build", cell: (b) => link(`#/builds/${b.buildId}`, b.nvr) },
          {
            label: "tag",
            cell: (b) => (b.inherited ? link(`#/tags/${encodeURIComponent(b.tag)}`, b.tag) : "this tag"),
          },
          { label: "event", class: "num", cell: (b) => b.event },
        ],
        latest,
        { empty: "no builds tagged" },
      ),
    ),
    h("section.card", { "data-testid": "tag-history" }, h("h2", "History"), drawHistory(tag.name, events)),
  );
}

/** The tag's current repository (what builds install Build-Depends from), if it has one. */
function drawRepo(repo) {
  if (repo === null) return h("p.empty", "no repository: the tag is no target's build tag");
  const url = `${globalThis.location.origin}${repo.path}`;
  return h(
    "dl.fields",
    [
      ["repo", `${repo.id} (${repo.state})`],
      ["event", repo.eventId],
      ["builds", repo.builds.length],
      ["packages", repo.packageCount],
      ["ready", timeEl(repo.readyAt)],
      [
        "apt source",
        h(
          "code",
          `deb [signed-by=/usr/share/keyrings/kiln-archive-keyring.gpg] ${url.replace(/\/$/, "")} kiln main`,
        ),
      ],
    ].map(([k, v]) => [h("dt", k), h("dd", v)]),
  );
}

/** The tag's changes, newest first, from the farm's latest tag and package events. */
function drawHistory(name, events) {
  if (events === null) return h("p.empty", "Sign in to see the history of changes.");
  const rows = tagHistory(events.events, name);
  return [
    table(
      [
        { label: "event", class: "num", cell: (e) => e.id },
        { label: "when", cell: (e) => timeEl(e.createdAt) },
        { label: "who", cell: (e) => e.actor ?? "—" },
        { label: "change", cell: (e) => h("span", { "data-type": e.type }, e.change) },
      ],
      rows,
      { empty: "no changes among the farm's latest tag and package events" },
    ),
    events.events.length >= HISTORY_EVENTS
      ? h(
          "p.follow",
          `From the farm's last ${HISTORY_EVENTS} tag and package events; \`kiln events\` reads further back.`,
        )
      : null,
  ];
}

/** The tag and every ancestor its walk reaches, children above parents, as an SVG graph. */
function drawInheritance(tag, edges) {
  const g = layoutGraph([tag.name], edges, { margin: 75 });
  const boxW = 130;
  const boxH = 30;
  const svg = s("svg", {
    viewBox: `0 0 ${g.width} ${g.height + 10}`,
    width: g.width,
    class: "graph",
    role: "img",
    "aria-label": `inheritance of ${tag.name}: ${edges.map((e) => `${e.from} inherits ${e.to}`).join(", ") || "no parents"}`,
    "data-testid": "tag-graph",
  });
  svg.append(
    s(
      "defs",
      {},
      s(
        "marker",
        {
          id: "arrow",
          viewBox: "0 0 10 10",
          refX: 10,
          refY: 5,
          markerWidth: 7,
          markerHeight: 7,
          orient: "auto-start-reverse",
        },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#777" }),
      ),
    ),
  );
  for (const e of g.edges) {
    svg.append(
      s("line", {
        class: "edge",
        x1: e.a.x,
        y1: e.a.y + boxH / 2,
        x2: e.b.x,
        y2: e.b.y - boxH / 2,
        "marker-end": "url(#arrow)",
        "data-edge": `${e.from}->${e.to}`,
      }),
      s("text", { x: (e.a.x + e.b.x) / 2 + 6, y: (e.a.y + e.b.y) / 2, fill: "#666" }, `p${e.priority}`),
    );
  }
  for (const n of g.nodes) {
    const a = s("a", { href: `#/tags/${encodeURIComponent(n.name)}` });
    a.append(
      s(
        "g",
        { class: n.name === tag.name ? "node focus" : "node", "data-node": n.name },
        s("rect", { x: n.x - boxW / 2, y: n.y - boxH / 2, width: boxW, height: boxH, rx: 4 }),
        s(
          "text",
          { x: n.x, y: n.y + 4, "text-anchor": "middle" },
          n.name.length > 18 ? n.name.slice(0, 17) + "…" : n.name,
        ),
      ),
    );
    svg.append(a);
  }
  return h("div.svg-wrap", svg);
}
