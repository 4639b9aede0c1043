// Charts drawn with uPlot: time series and histograms.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const WIDTH = 640;
const HEIGHT = 220;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function width(container) {
  return Math.max(320, Math.min(container.clientWidth || WIDTH, 960));
}

/**
 * A line chart over time. `xs` are seconds since the epoch, `series` `[{label, values}]`
 * with one value (or null) per x.
 */
export function timeChart(container, xs, series, options = {}) {
  const opts = {
    width: width(container),
    height: options.height || HEIGHT,
    scales: { x: options.xRange ? { time: true, range: () => options.xRange } : { time: true } },
    axes: [{}, { label: options.yLabel || "", size: 60 }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        points: { show: xs.length < 60 },
        spanGaps: false,
        paths: s.bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        fill: s.bars ? COLORS[i % COLORS.length] + "55" : undefined,
        scale: s.scale || "y",
      })),
    ],
  };
  if (series.some((s) => s.scale === "y2")) {
    opts.scales.y2 = {};
    opts.axes.push({ scale: "y2", side: 1, label: options.y2Label || "", size: 60, grid: { show: false } });
  }
  return new uPlot(opts, [xs, ...series.map((s) => s.values)], container);
}

/** A histogram of equal-width bins `[{lower, upper, count}]`. */
export function histogram(container, bins, options = {}) {
  const xs = bins.map((b) => (b.lower + b.upper) / 2);
  const counts = bins.map((b) => b.count);
  const opts = {
    width: options.width || 300,
    height: options.height || 160,
    legend: { show: false },
    scales: {
      x: {
        time: false,
        range: () => {
          const lo = bins[0].lower;
          const hi = bins[bins.length - 1].upper;
          return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
        },
      },
      y: { range: (u, min, max) => [0, Math.max(1, max)] },
    },
    axes: [{ size: 30 }, { size: 45 }],
    series: [
      {},
      {
        label: "rows",
        stroke: COLORS[0],
        fill: COLORS[0] + "88",
        paths: uPlot.paths.bars({ size: [0.95, Infinity], align: 0 }),
        points: { show: false },
      },
    ],
  };
  return new uPlot(opts, [xs, counts], container);
}
