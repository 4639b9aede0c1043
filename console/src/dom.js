// A few DOM helpers. Text from the server always goes in as text nodes, never as HTML.

/** `h("a", {href: "#"}, "text", child)`: an element with attributes and children. */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) {
      append(element, child);
    } else if (child instanceof Node) {
      element.appendChild(child);
    } else {
      element.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** A table: `columns` are header labels, `rows` arrays of cells (text or nodes). */
export function table(id, columns, rows) {
  return h(
    "table",
    { id, class: "grid" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell)))),
    ),
  );
}

/** A labelled figure: `[label, value]` pairs as a row of cards. */
export function cards(id, pairs) {
  return h(
    "div",
    { id, class: "cards" },
    pairs.map(([label, value]) =>
      h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value)),
    ),
  );
}

export function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

/** A number with thousands separators; `-` for none. */
export function num(n) {
  if (n === null || n === undefined) return "-";
  if (typeof n === "number" && !Number.isInteger(n)) {
    return n.toLocaleString("en-US", { maximumFractionDigits: 4 });
  }
  return n.toLocaleString("en-US");
}

/** Seconds as a short age: `42 s`, `3.5 min`, `2.1 h`, `4.0 d`. */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const sign = seconds < 0 ? "-" : "";
  const s = Math.abs(seconds);
  if (s < 90) return `${sign}${s.toFixed(0)} s`;
  if (s < 90 * 60) return `${sign}${(s / 60).toFixed(1)} min`;
  if (s < 36 * 3600) return `${sign}${(s / 3600).toFixed(1)} h`;
  return `${sign}${(s / 86400).toFixed(1)} d`;
}

/** A cell value of a JSON row: vectors shortened, null as `null`. */
export function cell(value) {
  if (value === null || value === undefined) return h("span", { class: "null" }, "null");
  if (Array.isArray(value)) {
    const shown = value.slice(0, 6).map((v) => (typeof v === "number" ? +v.toPrecision(4) : v));
    return `[${shown.join(", ")}${value.length > 6 ? ", …" : ""}]`;
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
