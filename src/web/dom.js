/* global document, Node */
/**
 * Building DOM without innerHTML: every value from the API goes in as text, so a package name
 * or a log line can never become markup.
 */

/** h("a.button#id", {href}, "text", child…): a tag with optional .classes and #id, in any order. */
export function h(spec, props, ...children) {
  const tag = /^[a-z0-9]*/i.exec(spec)[0];
  const el = document.createElement(tag || "div");
  const classes = [];
  for (const [, kind, name] of spec.slice(tag.length).matchAll(/([#.])([\w-]+)/g)) {
    if (kind === "#") el.id = name;
    else classes.push(name);
  }
  if (classes.length) el.className = classes.join(" ");
  // A second argument that is not a plain object is a child (0 and "" included).
  if (
    props !== undefined &&
    props !== null &&
    (typeof props !== "object" || props instanceof Node || Array.isArray(props))
  ) {
    children.unshift(props);
    props = undefined;
  }
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** A table from column specs `{label, cell(row) → node|text, class?}`; `empty` when no rows. */
export function table(columns, rows, { empty = "nothing here", caption } = {}) {
  if (rows.length === 0) return h("p.empty", empty);
  return h(
    "div.table-wrap",
    h(
      "table.stack",
      caption ? h("caption", caption) : null,
      h(
        "thead",
        h(
          "tr",
          columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)),
        ),
      ),
      h(
        "tbody",
        rows.map((r) =>
          h(
            "tr",
            columns.map((c) => h("td", { class: c.class, "data-label": c.label }, c.cell(r))),
          ),
        ),
      ),
    ),
  );
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function stateBadge(state) {
  return h(`span.badge.state-${String(state).replace(/[^a-z-]/gi, "")}`, state);
}

/** "3 min ago" style age of an ISO time, relative to `now` (ms). */
export function ago(iso, now = Date.now()) {
  if (!iso) return "—";
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (s < 0) return "soon";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function timeEl(iso) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: iso }, ago(iso));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A button that runs `action`, disabled while it runs, showing failures in `status`. */
export function actionButton(label, action, { danger = false, confirmText, status, testid } = {}) {
  const btn = h(danger ? "button.danger" : "button", { type: "button", "data-testid": testid }, label);
  btn.addEventListener("click", async () => {
    if (confirmText && !globalThis.confirm(confirmText)) return;
    btn.disabled = true;
    try {
      await action();
    } catch (err) {
      if (status) status.textContent = String(err.message ?? err);
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}
