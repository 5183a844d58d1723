/* global document */
import { api, apiBlob } from "./api.js";
import { bytes, clear, h, link, stateBadge, table, timeEl } from "./dom.js";

export async function renderBuildList(ctx) {
  const { main, signal, query } = ctx;
  const pkg = query.get("package") ?? "";
  const builds = await api(`/builds?limit=200${pkg ? `&package=${encodeURIComponent(pkg)}` : ""}`, {
    signal,
  });
  const input = h("input#pkg", { name: "package", value: pkg, placeholder: "source package" });
  const form = h(
    "form.inline",
    h("label", { for: "pkg" }, "Package"),
    input,
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    globalThis.location.hash = input.value.trim()
      ? `#/builds?package=${encodeURIComponent(input.value.trim())}`
      : "#/builds";
  });
  main.append(
    h("h1", "Builds"),
    form,
    table(
      [
        { label: "build", cell: (b) => link(`#/builds/${b.id}`, b.nvr) },
        { label: "state", cell: (b) => stateBadge(b.state) },
        { label: "target", cell: (b) => b.target ?? (b.scratch ? "scratch" : "—") },
        { label: "owner", cell: (b) => b.owner },
        { label: "started", cell: (b) => timeEl(b.createdAt) },
        { label: "finished", cell: (b) => timeEl(b.completedAt) },
      ],
      builds,
      { empty: "no builds" },
    ),
  );
}

export async function renderBuild(ctx) {
  const { main, signal } = ctx;
  const id = Number(ctx.params[0]);
  const [b, attempts, pubs] = await Promise.all([
    api(`/builds/${id}`, { signal }),
    api(`/builds/${id}/attempts`, { signal }).catch(() => []),
    api(`/builds/${id}/publications`, { signal }).catch(() => []),
  ]);
  const status = h("p.status", { role: "status" });
  main.append(
    h("h1", `${b.source} ${b.version} `, stateBadge(b.state)),
    h(
      "div.grid",
      h(
        "section.card",
        h("h2", "Build"),
        h(
          "dl.fields",
          [
            ["source", b.source],
            ["version", b.version],
            ["owner", b.owner],
            ["target", b.target ?? "—"],
            ["scratch", b.scratch ? "yes" : "no"],
            ["task", b.taskId ? link(`#/tasks/${b.taskId}`, `#${b.taskId}`) : "—"],
            ["started", timeEl(b.createdAt)],
            ["finished", timeEl(b.completedAt)],
            [
              "tags",
              b.tags.length
                ? b.tags.map((t, i) => [i ? ", " : "", link(`#/tags/${encodeURIComponent(t)}`, t)])
                : "none",
            ],
          ].map(([k, v]) => [h("dt", k), h("dd", v)]),
        ),
      ),
      h(
        "section.card",
        h("h2", "Architectures"),
        table(
          [
            { label: "arch", cell: (a) => a.arch },
            { label: "state", cell: (a) => stateBadge(a.state) },
            { label: "task", cell: (a) => link(`#/tasks/${a.taskId}`, `#${a.taskId}`) },
          ],
          b.arches,
          { empty: "no per-arch tasks yet" },
        ),
      ),
    ),
    h(
      "section.card",
      h("h2", "Artifacts"),
      table(
        [
          { label: "file", cell: (a) => a.name },
          { label: "kind", cell: (a) => a.kind },
          { label: "arch", cell: (a) => a.arch ?? "—" },
          { label: "size", class: "num", cell: (a) => bytes(a.size) },
          { label: "sha256", class: "mono", cell: (a) => a.sha256 },
          {
            label: "",
            cell: (a) => h("button", { type: "button", onclick: () => void download(a, status) }, "Download"),
          },
        ],
        b.artifacts,
        { empty: "no artifacts" },
      ),
      status,
    ),
    ...(b.buildroot ? [buildrootCard(b.buildroot)] : []),
    h(
      "section.card",
      h("h2", "Attempts"),
      table(
        [
          { label: "task", cell: (a) => link(`#/tasks/${a.taskId}`, `#${a.taskId}`) },
          { label: "step", cell: (a) => `${a.method}${a.arch ? " " + a.arch : ""}` },
          { label: "attempt", class: "num", cell: (a) => a.attempt },
          { label: "host", cell: (a) => a.host ?? "—" },
          { label: "outcome", cell: (a) => stateBadge(a.outcome) },
          { label: "exit", cell: (a) => a.errorCode ?? (a.exitCode !== null ? String(a.exitCode) : "") },
          {
            label: "duration",
            class: "num",
            cell: (a) => (a.duration === null ? "running" : `${a.duration.toFixed(1)} s`),
          },
        ],
        attempts,
        { empty: "no attempts recorded" },
      ),
    ),
    h(
      "section.card",
      h("h2", "Publications"),
      table(
        [
          {
            label: "publication",
            cell: (p) =>
              link(
                `#/publish/${encodeURIComponent(p.prefix)}/${encodeURIComponent(p.distribution)}`,
                `${p.prefix}/${p.distribution}`,
              ),
          },
          { label: "tag", cell: (p) => p.tag },
          { label: "apt sees it", cell: (p) => (p.ready ? `yes (generation ${p.generation})` : "not yet") },
        ],
        pubs,
        { empty: "not tracked by any publication" },
      ),
    ),
  );
}

/** The base a build ran in, the tag repo it installed from, and what apt installed per arch. */
function buildrootCard(root) {
  const tag = encodeURIComponent(root.tag);
  return h(
    "section.card",
    h("h2", "Buildroot"),
    h(
      "p",
      "base ",
      h("strong", root.name),
      ` (${root.sha256.slice(0, 12)}), Build-Depends from `,
      link(`#/tags/${tag}`, root.tag),
      `'s repo ${root.repoId}`,
    ),
    Object.entries(root.arches).map(([arch, a]) => [
      h("h3", `${arch}: ready in ${a.setupSeconds.toFixed(1)} s (base ${a.base})`),
      table(
        [
          { label: "package", cell: (p) => p.package },
          { label: "version", cell: (p) => p.version },
          { label: "arch", cell: (p) => p.arch },
        ],
        a.installed,
        { empty: "nothing beyond the base" },
      ),
    ]),
  );
}

/** Blobs need the token, so fetch and save rather than link. */
async function download(artifact, status) {
  try {
    const blob = await apiBlob(`/blobs/${artifact.sha256}`);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: artifact.name });
    document.body.append(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(url);
  } catch (err) {
    clear(status).append(String(err.message ?? err));
  }
}
