// Draws the overview's charts with Chart.js from the tables embedded by the page
// (json_script "chart-data": {table name: {columns, rows}}). Sets data-rendered="1" on each
// canvas once drawn, which the browser test checks.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const COLORS = ["#2f6fde", "#20a39e", "#f2a541", "#e4572e", "#7b61ff", "#8a8f98"];

  function column(table, name) {
    const index = table.columns.indexOf(name);
    return table.rows.map((row) => row[index]);
  }
  function percent(values) {
    return values.map((v) => (v === null ? null : Math.round(v * 1000) / 10));
  }
  function draw(id, config) {
    const canvas = document.getElementById(id);
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
    new Chart(canvas, config);
    canvas.dataset.rendered = "1";
  }
  function dataset(label, values, i, extra) {
    return Object.assign({ label: label, data: values, borderColor: COLORS[i], backgroundColor: COLORS[i] }, extra || {});
  }

  const daily = data.daily;
  const days = column(daily, "day");
  draw("chart-volume", {
    type: "line",
    data: {
      labels: days,
      datasets: [
        dataset("conversations", column(daily, "conversations"), 0),
        dataset("customer messages", column(daily, "customer messages"), 1),
        dataset("human requests", column(daily, "human requests"), 3),
      ],
    },
    options: { scales: { y: { beginAtZero: true } } },
  });

  const mix = data.source_mix;
  draw("chart-sources", {
    type: "bar",
    data: {
      labels: column(mix, "day"),
      datasets: mix.columns.slice(1).map((source, i) => dataset(source, column(mix, source), i)),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });

  draw("chart-rates", {
    type: "line",
    data: {
      labels: days,
      datasets: [
        dataset("cache hit rate %", percent(column(daily, "cache hit rate")), 1, { spanGaps: true }),
        dataset("SLA compliance %", percent(column(daily, "SLA compliance")), 3, { spanGaps: true }),
      ],
    },
    options: { scales: { y: { min: 0, max: 100 } } },
  });

  const latency = data.latency;
  draw("chart-latency", {
    type: "bar",
    data: {
      labels: column(latency, "source"),
      datasets: ["TTFT p50 ms", "TTFT p95 ms", "TTFT p99 ms"].map((name, i) => dataset(name.replace("TTFT ", ""), column(latency, name), i)),
    },
    options: { scales: { y: { beginAtZero: true } } },
  });

  const sources = data.sources;
  draw("chart-satisfaction", {
    type: "bar",
    data: {
      labels: column(sources, "source"),
      datasets: [
        dataset("thumbs up", column(sources, "thumbs up"), 1),
        dataset("thumbs down", column(sources, "thumbs down"), 3),
      ],
    },
    options: { scales: { y: { beginAtZero: true } } },
  });
})();
