/* global document, window, location */
import { api, ApiError, getToken, setToken, signOut } from "./api.js";
import { clear, h } from "./dom.js";
import { permissions } from "./view-model.js";
import { renderDashboard } from "./page-dashboard.js";
import { renderTaskList, renderTask } from "./page-tasks.js";
import { renderBuildList, renderBuild } from "./page-builds.js";
import { renderTagList, renderTag } from "./page-tags.js";
import { renderRepoIndex, renderRepo, renderSnapshot, renderPublication } from "./page-repos.js";
import { renderHosts } from "./page-hosts.js";
import { renderHealth } from "./page-health.js";
import { renderWebhooks } from "./page-webhooks.js";

const NAV = [
  ["#/", "Dashboard"],
  ["#/tasks", "Tasks"],
  ["#/builds", "Builds"],
  ["#/tags", "Tags"],
  ["#/repos", "Repos & publications"],
  ["#/hosts", "Hosts"],
  ["#/health", "Health"],
  // The webhooks API is for admins alone: others get no menu entry.
  ["#/webhooks", "Webhooks", { admin: true }],
];

/** Hash routes: `#/tasks/12?x=1` → page, params, query. */
const ROUTES = [
  [/^\/$/, renderDashboard],
  [/^\/tasks$/, renderTaskList],
  [/^\/tasks\/(\d+)$/, renderTask],
  [/^\/builds$/, renderBuildList],
  [/^\/builds\/(\d+)$/, renderBuild],
  [/^\/tags$/, renderTagList],
  [/^\/tags\/([^/]+)$/, renderTag],
  [/^\/repos$/, renderRepoIndex],
  [/^\/repos\/([^/]+)$/, renderRepo],
  [/^\/snapshots\/([^/]+)$/, renderSnapshot],
  [/^\/publish\/([^/]+)\/([^/]+)$/, renderPublication],
  [/^\/hosts$/, renderHosts],
  [/^\/health$/, renderHealth],
  [/^\/webhooks$/, renderWebhooks],
];

const main = document.getElementById("main");
let me = null;
let current = null;
let navigated = false;

async function whoami() {
  try {
    return await api("/whoami");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return null;
    throw err;
  }
}

function renderShell() {
  const nav = clear(document.getElementById("nav"));
  const who = clear(document.getElementById("who"));
  if (!me) return;
  const can = permissions(me);
  for (const [href, label, only] of NAV) {
    if (only?.admin && !can.admin) continue;
    nav.append(h("a", { href }, label));
  }
  markNav();
  if (me.user) {
    who.append(h("span", { "data-testid": "whoami" }, `${me.user} (${me.role})`));
    who.append(h("button", { type: "button", onclick: () => doSignOut() }, "Sign out"));
  } else {
    who.append(h("span", { "data-testid": "whoami" }, "read-only"));
    who.append(h("a.button", { href: "#/signin" }, "Sign in"));
  }
}

function markNav() {
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const on = target === "/" ? path === "/" : path.startsWith(target);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function doSignOut() {
  signOut();
  void start();
}

function renderSignIn(reason) {
  clear(main);
  const input = h("input#token", {
    type: "password",
    autocomplete: "current-password",
    required: true,
    "aria-describedby": "token-help",
  });
  const remember = h("input#remember", { type: "checkbox" });
  const status = h("p.status", { role: "alert" }, reason ?? "");
  const form = h(
    "form.card.signin",
    h("h1", "Sign in to Kiln"),
    h("label", { for: "token" }, "Token"),
    input,
    h(
      "p#token-help.follow",
      "A user or admin token: `kiln token create USER` makes one; the hub's first admin token is in its data directory (admin-token).",
    ),
    h("p", h("label", remember, " Remember on this browser")),
    h("button.primary", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim(), remember.checked);
    const who = await whoami().catch((err) => ({ error: err }));
    if (!who || who.error) {
      signOut();
      status.textContent = who?.error?.message ?? "that token was not accepted";
      return;
    }
    if (who.role === "host") {
      signOut();
      status.textContent = "that is a host's token; sign in with a user's";
      return;
    }
    location.hash = location.hash.startsWith("#/signin") ? "#/" : location.hash;
    await start();
  });
  main.append(form);
  input.focus();
}

async function route() {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  markNav();
  if (path === "/signin" || !me) {
    renderSignIn();
    return;
  }
  const found = ROUTES.map(([re, page]) => [re.exec(path), page]).find(([m]) => m);
  clear(main);
  if (!found) {
    main.append(
      h("h1", "Not found"),
      h("p", "No page here. ", h("a", { href: "#/" }, "Go to the dashboard.")),
    );
    return;
  }
  const [m, page] = found;
  const ctx = {
    me,
    can: permissions(me),
    signal: controller.signal,
    main,
    params: m.slice(1).map(decodeURIComponent),
    query: new URLSearchParams(qs ?? ""),
  };
  try {
    await page(ctx);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      me = null;
      renderShell();
      renderSignIn("your token is no longer valid; sign in again");
      return;
    }
    main.append(
      h(
        "div.error-box",
        { role: "alert" },
        h("strong", "Could not load this page: "),
        String(err.message ?? err),
      ),
    );
  }
  // After a navigation, move focus to the new page for keyboard and screen reader users; a fresh
  // load leaves it at the top, where the skip link is the first stop.
  if (navigated && (document.activeElement === document.body || !main.contains(document.activeElement))) {
    main.focus({ preventScroll: true });
  }
  navigated = true;
}

async function start() {
  // Without a token, ask whoami only when the hub opens reads to everyone.
  const open = getToken() ? true : (await fetch("/ui/config.json").then((r) => r.json())).publicReads;
  me = open ? await whoami() : null;
  if (me && me.role === "host") me = null;
  renderShell();
  await route();
}

window.addEventListener("hashchange", () => void route());
void start();
