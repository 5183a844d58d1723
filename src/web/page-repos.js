/* global location */
import { api } from "./api.js";
import { actionButton, bytes, clear, h, link, stateBadge, table, timeEl } from "./dom.js";
import { keyringCommand, sourcesLine } from "./view-model.js";
import { pubHref } from "./page-dashboard.js";

const enc = encodeURIComponent;

export async function renderRepoIndex(ctx) {
  const { main, signal } = ctx;
  const [repos, snapshots, pubs] = await Promise.all([
    api("/repos", { signal }),
    api("/snapshots", { signal }),
    api("/publish", { signal }),
  ]);
  main.append(
    h("h1", "Repositories, snapshots and publications"),
    h(
      "section.card",
      h("h2", "Publications"),
      table(
        [
          { label: "publication", cell: (p) => link(pubHref(p), `${p.prefix}/${p.distribution}`) },
          {
            label: "from",
            cell: (p) => `${p.sourceKind}: ${p.sources.map((x) => `${x.name} (${x.component})`).join(", ")}`,
          },
          { label: "arches", cell: (p) => p.architectures.join(" ") },
          { label: "live generation", class: "num", cell: (p) => p.liveGeneration ?? "—" },
          { label: "updated", cell: (p) => timeEl(p.updatedAt) },
        ],
        pubs,
        { empty: "nothing published" },
      ),
    ),
    h(
      "div.grid",
      h(
        "section.card",
        h("h2", "Local repos"),
        table(
          [
            { label: "repo", cell: (r) => link(`#/repos/${enc(r.name)}`, r.name) },
            { label: "distribution", cell: (r) => `${r.distribution}/${r.component}` },
            { label: "comment", cell: (r) => r.comment },
          ],
          repos,
          { empty: "no repos" },
        ),
      ),
      h(
        "section.card",
        h("h2", "Snapshots"),
        table(
          [
            { label: "snapshot", cell: (x) => link(`#/snapshots/${enc(x.name)}`, x.name) },
            { label: "from", cell: (x) => x.origin?.kind ?? "" },
            { label: "created", cell: (x) => timeEl(x.createdAt) },
          ],
          snapshots,
          { empty: "no snapshots" },
        ),
      ),
    ),
  );
}

/** Contents with the Aptly package query (`Name (~ ^lib)`, `$Architecture (amd64)`, …). */
async function renderContents(ctx, kind, path) {
  const { main, signal, query } = ctx;
  const q = query.get("q") ?? "";
  const detail = await api(`${path}?withPackages=true${q ? `&q=${enc(q)}` : ""}`, { signal });
  const input = h("input#q", {
    type: "search",
    name: "q",
    value: q,
    placeholder: "package query, e.g. Name (~ ^lib), $Architecture (amd64)",
    size: 40,
  });
  const form = h(
    "form.inline",
    { role: "search" },
    h("label", { for: "q" }, "Query"),
    input,
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const base = location.hash.split("?")[0];
    location.hash = input.value.trim() ? `${base}?q=${enc(input.value.trim())}` : base;
  });
  const fields =
    kind === "repo"
      ? [
          ["distribution", detail.distribution],
          ["component", detail.component],
          ["comment", detail.comment],
        ]
      : [
          ["description", detail.description],
          ["origin", JSON.stringify(detail.origin)],
        ];
  main.append(
    h("h1", `${kind === "repo" ? "Repo" : "Snapshot"} ${detail.name}`),
    h(
      "dl.fields",
      [
        ...fields,
        ["packages", detail.packageCount ?? detail.packages?.length ?? 0],
        ["created", timeEl(detail.createdAt)],
      ].map(([k, v]) => [h("dt", k), h("dd", v)]),
    ),
    form,
    table(
      [
        { label: "package", cell: (p) => p.name },
        { label: "version", cell: (p) => p.version },
        { label: "arch", cell: (p) => p.architecture },
        { label: "source", cell: (p) => p.source },
        { label: "size", class: "num", cell: (p) => bytes(p.files.reduce((n, f) => n + f.size, 0)) },
      ],
      detail.packages ?? [],
      { empty: q ? "no package matches" : "empty" },
    ),
  );
}

export function renderRepo(ctx) {
  return renderContents(ctx, "repo", `/repos/${enc(ctx.params[0])}`);
}

export function renderSnapshot(ctx) {
  return renderContents(ctx, "snapshot", `/snapshots/${enc(ctx.params[0])}`);
}

export async function renderPublication(ctx) {
  const { main, signal, can } = ctx;
  const [prefix, dist] = ctx.params;
  const body = h("div");
  main.append(body);
  const draw = async () => {
    const pub = await api(`/publish/${enc(dist)}?prefix=${enc(prefix)}`, { signal });
    const hub = location.origin;
    const line = sourcesLine(hub, {
      prefix: pub.prefix,
      distribution: pub.distribution,
      components: [...new Set(pub.sources.map((x) => x.component))],
      signed: !pub.skipSigning,
    });
    const status = h("p.status", { role: "status" });
    const rollback = (gen) =>
      actionButton(
        `Roll back to ${gen.generation}`,
        async () => {
          await api(`/publish/${enc(dist)}/rollback?prefix=${enc(prefix)}`, {
            method: "POST",
            body: { to: gen.generation },
          });
          await draw();
        },
        {
          danger: true,
          status,
          confirmText: `Serve generation ${gen.generation} of ${pub.prefix}/${pub.distribution} again?`,
          testid: `rollback-${gen.generation}`,
        },
      );
    clear(body).append(
      h("h1", `Publication ${pub.prefix}/${pub.distribution}`),
      h(
        "div.grid",
        h(
          "section.card",
          h("h2", "Publication"),
          h(
            "dl.fields",
            [
              [
                "live generation",
                h("span", { "data-testid": "live-generation" }, pub.liveGeneration ?? "none"),
              ],
              [
                "from",
                `${pub.sourceKind}: ${pub.sources.map((x) => `${x.name} (${x.component})`).join(", ")}`,
              ],
              [
                "architectures",
                pub.architectures.length ? pub.architectures.join(" ") : "all in the sources",
              ],
              ["origin / label", `${pub.origin || "—"} / ${pub.label || "—"}`],
              ["signed", pub.skipSigning ? "no" : "yes"],
              ["Release", h("a", { href: `/apt/${pub.path}/Release` }, `/apt/${pub.path}/Release`)],
            ].map(([k, v]) => [h("dt", k), h("dd", v)]),
          ),
        ),
        h(
          "section.card",
          h("h2", "Use it with apt"),
          pub.skipSigning
            ? null
            : [
                h("p", "Install the archive key:"),
                h("code.copy", { "data-testid": "key-command" }, keyringCommand(hub)),
              ],
          h("p", "Then add this line to /etc/apt/sources.list.d/kiln.list:"),
          h("code.copy", { "data-testid": "sources-line" }, line),
        ),
      ),
      h(
        "section.card",
        h("h2", "History"),
        status,
        table(
          [
            { label: "generation", class: "num", cell: (g) => g.generation },
            { label: "state", cell: (g) => stateBadge(g.state) },
            { label: "packages", class: "num", cell: (g) => g.packageCount },
            {
              label: "Release sha256",
              class: "mono",
              cell: (g) => (g.releaseSha256 ? g.releaseSha256.slice(0, 16) + "…" : "—"),
            },
            { label: "task", cell: (g) => (g.taskId ? link(`#/tasks/${g.taskId}`, `#${g.taskId}`) : "—") },
            { label: "made", cell: (g) => timeEl(g.createdAt) },
            { label: "live since", cell: (g) => timeEl(g.liveAt) },
            {
              label: "",
              cell: (g) => (can.user && g.state === "retired" && g.releaseSha256 ? rollback(g) : ""),
            },
          ],
          [...(pub.history ?? [])].sort((a, b) => b.generation - a.generation),
          { empty: "no generations" },
        ),
      ),
    );
  };
  await draw();
}
