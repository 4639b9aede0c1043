// The FeatherStore web console: a hash-routed page over the server's HTTP API.
//   #/sets               feature sets, with a search box
//   #/sets/NAME          one set: schema, versions, tags, freshness, histograms, lookup, history
//   #/services[/NAME]    feature services
//   #/server             request rates, latency percentiles, storage state
import "./style.css";
import { api, ApiError, enc, setToken, token } from "./api.js";
import { age, cards, cell, h, num, section, table } from "./dom.js";
import { histogram, timeChart } from "./charts.js";

const main = document.getElementById("main");
/** Stops the current page's timers when another page is shown. */
let leave = () => {};
/** Bumped on every navigation: answers for an older page are dropped. */
let generation = 0;

function route() {
  leave();
  leave = () => {};
  const current = ++generation;
  const path = (location.hash.replace(/^#/, "") || "/sets").split("/").filter(Boolean);
  const [page, name] = [path[0], path[1] && decodeURIComponent(path[1])];
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  showTokenState();
  show(main, h("p", { class: "loading" }, "Loading…"));
  const pages = {
    sets: () => (name ? setPage(name, current) : setsPage(current)),
    services: () => (name ? servicePage(name, current) : servicesPage(current)),
    server: () => serverPage(current),
  };
  const render = pages[page] || pages.sets;
  render().catch((e) => showError(e, current));
}

/** Replaces `target`'s children; absent ones (`cond && node`) are left out. */
function show(target, ...children) {
  target.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
}

/** Whether `current` is still the page on screen. */
const live = (current) => current === generation;

function showError(error, current) {
  if (!live(current)) return;
  if (error instanceof ApiError && error.status === 401) {
    show(main, tokenForm(token() ? "The token was not accepted." : null));
    return;
  }
  show(main, errorBox(error));
}

function errorBox(error) {
  const detail = error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
  return h("div", { class: "error", role: "alert" }, detail);
}

// ---- token -------------------------------------------------------------------------------

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token set" : "no token";
}

function tokenForm(problem) {
  const input = h("input", {
    id: "token-input",
    type: "password",
    autocomplete: "off",
    placeholder: "bearer token",
    size: 40,
  });
  const form = h(
    "form",
    {
      id: "token-form",
      class: "token-form",
      onsubmit: (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        route();
      },
    },
    h("h1", {}, "Sign in"),
    h(
      "p",
      {},
      "This server needs a token. Enter one with the read scope; it is kept in this browser tab's session only.",
    ),
    problem && h("div", { class: "error", role: "alert" }, problem),
    input,
    " ",
    h("button", { id: "token-save", type: "submit" }, "Use token"),
  );
  setTimeout(() => input.focus(), 0);
  return form;
}

document.getElementById("token-change").addEventListener("click", () => {
  leave();
  leave = () => {};
  generation++;
  show(main, tokenForm(null));
});
document.getElementById("token-clear").addEventListener("click", () => {
  setToken(null);
  route();
});

// ---- feature sets ------------------------------------------------------------------------

function featureNames(spec) {
  return spec.features.map((f) => f.name);
}

async function setsPage(current) {
  const sets = await api("/v1/feature-sets?stats=true");
  if (!live(current)) return;
  const search = h("input", {
    id: "set-search",
    type: "search",
    placeholder: "Search by name, entity, feature, tag…",
    size: 40,
  });
  const holder = h("div", {});
  const count = h("span", { id: "set-count", class: "muted" });
  const draw = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = sets.filter((spec) => {
      const text = [
        spec.name,
        spec.entity.name,
        spec.description || "",
        ...featureNames(spec),
        ...Object.entries(spec.tags || {}).map(([k, v]) => `${k}=${v}`),
      ]
        .join(" ")
        .toLowerCase();
      return words.every((w) => text.includes(w));
    });
    count.textContent = `${shown.length} of ${sets.length} feature sets`;
    holder.replaceChildren(
      table(
        "sets-table",
        ["Name", "Entity", "Features", "Rows", "Entities", "Latest event", "Freshness", "Version"],
        shown.map((spec) => {
          const names = featureNames(spec);
          return [
            h("a", { href: `#/sets/${enc(spec.name)}`, class: "set-link" }, spec.name),
            `${spec.entity.name} (${spec.entity.type})`,
            h(
              "span",
              { title: names.join(", ") },
              `${names.length}: ${names.slice(0, 4).join(", ")}${names.length > 4 ? ", …" : ""}`,
            ),
            num(spec.stats.rows),
            num(spec.stats.entities),
            spec.stats.latest_event_timestamp || "-",
            age(spec.stats.freshness_seconds),
            spec.version ?? "-",
          ];
        }),
      ),
    );
  };
  search.addEventListener("input", draw);
  draw();
  show(main, h("h1", {}, "Feature sets"), h("div", { class: "toolbar" }, search, " ", count), holder);
}

async function setPage(name, current) {
  const [spec, versions] = await Promise.all([
    api(`/v1/feature-sets/${enc(name)}`),
    api(`/v1/feature-sets/${enc(name)}/versions`),
  ]);
  if (!live(current)) return;
  const stats = spec.stats;
  const freshness =
    stats.latest_event_timestamp && (Date.now() - Date.parse(stats.latest_event_timestamp)) / 1000;
  const freshnessChart = h("div", { id: "freshness-chart", class: "chart" });
  const histograms = h("div", { id: "histograms", class: "histograms" });
  show(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/sets" }, "Feature sets"), " / ", name),
    h("h1", { id: "set-name" }, spec.name),
    spec.description && h("p", { class: "description" }, spec.description),
    tags(spec.tags),
    cards("set-stats", [
      ["Rows", num(stats.rows)],
      ["Entities", num(stats.entities)],
      ["Latest event", stats.latest_event_timestamp || "-"],
      ["Freshness", age(freshness)],
      ["Version", spec.version ?? "-"],
      ["TTL", spec.ttl_seconds ? age(spec.ttl_seconds) : "none"],
    ]),
    section("Schema", schemaTable(spec)),
    section("Versions", versionsTable(versions)),
    section(
      "Freshness over time",
      h(
        "p",
        { class: "muted" },
        "Per bucket of server time: how old the newest event time stored by its end was, and the rows ingested in it.",
      ),
      freshnessChart,
    ),
    section(
      "Distributions",
      h("p", { class: "muted" }, "Histograms of each numeric feature over a sample of the stored rows."),
      histograms,
    ),
    section("Online lookup", lookupForm(spec)),
    section("Entity history", historyForm(spec)),
  );
  drawFreshness(name, freshnessChart, current);
  drawHistograms(spec, histograms, current);
}

function tags(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h("p", { id: "set-tags", class: "muted" }, "No tags");
  return h(
    "p",
    { id: "set-tags" },
    entries.map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`)),
  );
}

function schemaTable(spec) {
  const rows = [[spec.entity.name, "entity", spec.entity.type, spec.entity.description || ""]];
  for (const f of spec.features) rows.push([f.name, "feature", f.type, f.description || ""]);
  rows.push([spec.timestamp, "event time", "timestamp", ""]);
  return table("schema-table", ["Column", "Role", "Type", "Description"], rows);
}

function versionsTable(versions) {
  if (!versions || versions.length === 0) return h("p", { class: "muted" }, "No stored versions");
  return table(
    "versions-table",
    ["Version", "Created", "Features"],
    [...versions].reverse().map((v) => [v.version ?? "-", v.created_at || "-", featureNames(v).join(", ")]),
  );
}

async function drawFreshness(name, container, current) {
  try {
    const series = await api(`/v1/feature-sets/${enc(name)}/freshness`);
    if (!live(current)) return;
    if (!series.buckets.length) {
      container.replaceChildren(h("p", { class: "muted" }, "No rows stored yet."));
      return;
    }
    const xs = series.buckets.map((b) => Date.parse(b.end) / 1000);
    container.replaceChildren();
    container.dataset.buckets = String(series.buckets.length);
    timeChart(
      container,
      xs,
      [
        { label: "freshness (s)", values: series.buckets.map((b) => b.freshness_seconds) },
        { label: "rows ingested", values: series.buckets.map((b) => b.rows), scale: "y2", bars: true },
      ],
      {
        yLabel: "seconds",
        y2Label: "rows",
        // One bucket would otherwise be drawn across years; half a bucket more on the right
        // keeps the last bar whole.
        xRange: [Date.parse(series.buckets[0].start) / 1000, xs[xs.length - 1] + series.bucket_seconds / 2],
      },
    );
    container.appendChild(h("p", { class: "muted" }, `bucket: ${age(series.bucket_seconds)}`));
  } catch (e) {
    if (live(current)) container.replaceChildren(errorBox(e));
  }
}

const NUMERIC = new Set(["int32", "int64", "float32", "float64"]);

async function drawHistograms(spec, container, current) {
  const numeric = spec.features.filter((f) => NUMERIC.has(f.type));
  if (!numeric.length) {
    container.replaceChildren(h("p", { class: "muted" }, "No numeric features."));
    return;
  }
  container.replaceChildren();
  for (const feature of numeric) {
    const box = h("div", { class: "histogram", id: `hist-${feature.name}`, "data-feature": feature.name });
    container.appendChild(box);
    box.appendChild(h("h3", {}, feature.name));
    try {
      const d = await api(
        `/v1/feature-sets/${enc(spec.name)}/distribution?feature=${enc(feature.name)}&sample=10000&bins=20`,
      );
      if (!live(current)) return;
      const chart = h("div", { class: "chart" });
      box.appendChild(chart);
      if (d.bins.length) {
        histogram(chart, d.bins);
      } else {
        chart.appendChild(h("p", { class: "muted" }, "No values."));
      }
      box.appendChild(
        h(
          "p",
          { class: "muted hist-stats" },
          `sampled ${num(d.sampled)} rows · nulls ${num(d.nulls)} · min ${num(d.min)} · mean ${num(d.mean)} · max ${num(d.max)}`,
        ),
      );
    } catch (e) {
      if (!live(current)) return;
      box.appendChild(errorBox(e));
    }
  }
}

/** Entity keys typed by a person: comma or whitespace separated; numbers for int64 entities. */
function parseKeys(spec, text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (spec.entity.type !== "int64") return parts;
  return parts.map((p) => {
    if (!/^-?\d+$/.test(p)) throw new Error(`${p} is not an int64 entity key`);
    return Number(p);
  });
}

function rowsTable(id, rows, columns) {
  return table(
    id,
    columns,
    rows.map((row) => columns.map((c) => cell(row[c]))),
  );
}

function columnsOf(spec) {
  return [spec.entity.name, ...featureNames(spec), spec.timestamp];
}

/**
 * A one-field form of entity keys: `run(keys, result)` answers into `result`; its errors
 * are shown there.
 */
function keyForm(ids, placeholder, label, loading, spec, run) {
  const input = h("input", { id: ids.input, placeholder, size: 40 });
  const result = h("div", { id: ids.result });
  const form = h(
    "form",
    {
      id: ids.form,
      onsubmit: async (event) => {
        event.preventDefault();
        result.replaceChildren(h("p", { class: "loading" }, loading));
        try {
          await run(parseKeys(spec, input.value), result);
        } catch (e) {
          result.replaceChildren(errorBox(e));
        }
      },
    },
    input,
    " ",
    h("button", { id: ids.submit, type: "submit" }, label),
  );
  return h("div", {}, form, result);
}

function lookupForm(spec) {
  const ids = { input: "lookup-keys", result: "lookup-result", form: "lookup-form", submit: "lookup-submit" };
  return keyForm(ids, `${spec.entity.name} keys, comma separated`, "Look up", "Looking up…", spec, async (entities, result) => {
    const answer = await api("/v1/online", { feature_set: spec.name, entities });
    result.replaceChildren(rowsTable("lookup-table", answer.rows, columnsOf(spec)));
  });
}

const HISTORY_ROWS_SHOWN = 500;

function historyForm(spec) {
  const ids = { input: "history-key", result: "history-result", form: "history-form", submit: "history-submit" };
  return keyForm(ids, `one ${spec.entity.name}`, "Show history", "Reading history…", spec, async (entities, result) => {
    if (entities.length !== 1) throw new Error("enter exactly one entity key");
    const answer = await api("/v1/history", { feature_set: spec.name, entities });
    drawHistory(spec, answer.rows, result);
  });
}

function drawHistory(spec, rows, result) {
  if (!rows.length) {
    result.replaceChildren(h("p", { id: "history-empty", class: "muted" }, "No rows for this entity."));
    return;
  }
  const chart = h("div", { id: "history-chart", class: "chart" });
  const shown = rows.slice(-HISTORY_ROWS_SHOWN);
  result.replaceChildren(
    h("p", { class: "muted" }, `${num(rows.length)} rows${rows.length > shown.length ? `, the last ${shown.length} shown` : ""}`),
    chart,
    rowsTable("history-table", shown, columnsOf(spec)),
  );
  const numeric = spec.features.filter((f) => NUMERIC.has(f.type));
  if (!numeric.length) {
    chart.replaceChildren(h("p", { class: "muted" }, "No numeric features to chart."));
    return;
  }
  // uPlot wants increasing x: rows of equal event time keep their last value.
  const byTime = new Map();
  for (const row of rows) byTime.set(Date.parse(row[spec.timestamp]) / 1000, row);
  const xs = [...byTime.keys()].sort((a, b) => a - b);
  timeChart(
    chart,
    xs,
    // The second feature on its own axis: features of different magnitudes stay readable.
    numeric.map((f, i) => ({
      label: f.name,
      values: xs.map((x) => byTime.get(x)[f.name] ?? null),
      scale: i === 1 ? "y2" : "y",
    })),
    { yLabel: numeric[0].name, y2Label: numeric.length > 1 ? numeric[1].name : "" },
  );
}

// ---- feature services --------------------------------------------------------------------

async function servicesPage(current) {
  const services = await api("/v1/feature-services");
  if (!live(current)) return;
  show(main, 
    h("h1", {}, "Feature services"),
    services.length
      ? table(
          "services-table",
          ["Name", "Description", "Features", "Feature sets", "Created"],
          services.map((s) => [
            h("a", { href: `#/services/${enc(s.name)}` }, s.name),
            s.description || "",
            num(s.features.length),
            [...new Set(s.features.map((f) => f.split(":")[0]))].join(", "),
            s.created_at || "-",
          ]),
        )
      : h("p", { id: "services-empty", class: "muted" }, "No feature services."),
  );
}

async function servicePage(name, current) {
  const service = await api(`/v1/feature-services/${enc(name)}`);
  if (!live(current)) return;
  show(main, 
    h("p", { class: "crumbs" }, h("a", { href: "#/services" }, "Feature services"), " / ", name),
    h("h1", { id: "service-name" }, service.name),
    service.description && h("p", { class: "description" }, service.description),
    tags(service.tags),
    section(
      "Features",
      table(
        "service-features",
        ["Reference", "Feature set", "Feature"],
        service.features.map((ref) => {
          const [set, feature] = ref.split(":");
          return [ref, h("a", { href: `#/sets/${enc(set)}` }, set), feature];
        }),
      ),
    ),
    h("p", { class: "muted" }, `created ${service.created_at || "-"}`),
  );
}

// ---- server ------------------------------------------------------------------------------

const POLL_MS = 2000;
const POINTS_KEPT = 150;
const QUANTILES = [
  ["p50", 0.5],
  ["p90", 0.9],
  ["p99", 0.99],
];

/** The q quantile (ms) of the observations between two cumulative histograms. */
export function windowQuantile(bounds, before, after, q) {
  const diff = after.map((n, i) => n - (before ? before[i] : 0));
  const total = diff[diff.length - 1];
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (diff[i] >= rank) {
      const inside = diff[i] - below;
      return lower + (bounds[i] - lower) * (inside > 0 ? (rank - below) / inside : 1);
    }
    lower = bounds[i];
    below = diff[i];
  }
  return bounds[bounds.length - 1];
}

async function serverPage(current) {
  const first = await api("/v1/server/stats");
  if (!live(current)) return;
  const history = { xs: [], rate: [], p50: [], p90: [], p99: [] };
  const summary = h("div", { id: "server-summary" });
  const rateChart = h("div", { id: "rate-chart", class: "chart" });
  const latencyChart = h("div", { id: "latency-chart", class: "chart" });
  const methods = h("div", { id: "server-methods" });
  show(main, 
    h("h1", {}, "Server"),
    summary,
    section("Requests per second", rateChart),
    section("Latency percentiles (ms, between samples)", latencyChart),
    section("Requests since start", methods),
  );
  let previous = null;
  let charts = null;
  const update = (stats) => {
    const total = (stats.requests || []).reduce((sum, r) => sum + r.count, 0);
    const now = Date.parse(stats.time) / 1000;
    const latency = Object.values(stats.latency || {});
    const cumulative = latency.length
      ? latency[0].cumulative.map((_, i) => latency.reduce((sum, l) => sum + l.cumulative[i], 0))
      : null;
    const bounds = latency.length ? latency[0].bounds_ms : [];
    summary.replaceChildren(
      ...[cards("server-cards", [
        ["Status", stats.status],
        ["Version", stats.version],
        ["Storage backend", stats.storage.backend],
        ["Storage state", stats.storage.state],
        ["Stored", stats.storage.bytes == null ? "-" : `${num(stats.storage.bytes)} B in ${num(stats.storage.files)} files`],
        ["Online store", `${stats.online.backend} (${stats.online.state})`],
        ["Feature sets", num(stats.feature_sets)],
        ["Feature services", num(stats.feature_services)],
        ["Requests", num(total)],
        ["In flight", `${stats.in_flight.http} HTTP, ${stats.in_flight.flight} Flight`],
      ]),
      stats.stalled && stats.stalled.length
        ? h("div", { class: "error" }, stats.stalled.map((s) => `${s.component}: ${s.reason}`).join("; "))
        : null,
      ].filter(Boolean),
    );
    methods.replaceChildren(
      table(
        "methods-table",
        ["API", "Method", "Requests", "Errors", "p50 ms", "p90 ms", "p99 ms"],
        (stats.requests || []).map((r) => [r.api, r.method, num(r.count), num(r.errors), ms(r.p50_ms), ms(r.p90_ms), ms(r.p99_ms)]),
      ),
    );
    if (previous && cumulative && now > previous.now) {
      history.xs.push(now);
      history.rate.push((total - previous.total) / (now - previous.now));
      for (const [label, q] of QUANTILES) {
        history[label].push(windowQuantile(bounds, previous.cumulative, cumulative, q));
      }
      for (const key of Object.keys(history)) history[key] = history[key].slice(-POINTS_KEPT);
      if (!charts) {
        rateChart.replaceChildren();
        latencyChart.replaceChildren();
        charts = {
          rate: timeChart(rateChart, history.xs, [{ label: "requests/s", values: history.rate }], { yLabel: "req/s" }),
          latency: timeChart(
            latencyChart,
            history.xs,
            QUANTILES.map(([label]) => ({ label, values: history[label] })),
            { yLabel: "ms" },
          ),
        };
      } else {
        charts.rate.setData([history.xs, history.rate]);
        charts.latency.setData([history.xs, ...QUANTILES.map(([label]) => history[label])]);
      }
      rateChart.dataset.points = String(history.xs.length);
    } else if (!charts) {
      rateChart.replaceChildren(h("p", { class: "muted" }, "Sampling…"));
    }
    previous = { now, total, cumulative };
  };
  update(first);
  const timer = setInterval(async () => {
    try {
      const stats = await api("/v1/server/stats");
      if (live(current)) update(stats);
    } catch (e) {
      if (live(current)) summary.prepend(errorBox(e));
    }
  }, POLL_MS);
  leave = () => clearInterval(timer);
}

function ms(value) {
  return value === null || value === undefined ? "-" : value.toFixed(value < 1 ? 3 : 1);
}

window.addEventListener("hashchange", route);
route();
