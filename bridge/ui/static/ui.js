// The queues page follows /api/queues: the table's counts and one uPlot chart per queue.
(function () {
  "use strict";
  const STATS = ["waiting", "delayed", "held", "dead"];
  const COLORS = ["#1f77b4", "#9467bd", "#ff7f0e", "#d62728"];
  const charts = {};
  const every = 1000;

  function chartFor(row, div) {
    const opts = {
      width: 460, height: 180,
      scales: { x: { time: true } },
      series: [{}].concat(STATS.map((name, i) => ({ label: name, stroke: COLORS[i], width: 1.5 }))),
      axes: [{}, { size: 50 }],
    };
    return new uPlot(opts, data(row), div);
  }

  function data(row) {
    const h = row.history;
    return [h.t].concat(STATS.map((name) => h[name]));
  }

  function update(rows) {
    for (const row of rows) {
      const tr = document.querySelector(`tr[data-queue="${CSS.escape(row.id)}"]`);
      if (tr) {
        for (const name of STATS) {
          const cell = tr.querySelector(`td[data-stat="${name}"]`);
          const value = row.stats[name];
          if (cell) cell.textContent = value === null || value === undefined ? "–" : String(value);
        }
        const err = tr.querySelector(".err");
        if (err) err.textContent = row.error || "";
      }
      const div = document.querySelector(`div.plot[data-queue="${CSS.escape(row.id)}"]`);
      if (!div || typeof uPlot === "undefined") continue;
      if (!charts[row.id]) charts[row.id] = chartFor(row, div);
      else charts[row.id].setData(data(row));
    }
    document.body.dataset.updated = String(Date.now());
  }

  async function poll() {
    try {
      const reply = await fetch("/api/queues", { credentials: "same-origin" });
      if (reply.ok) update(await reply.json());
    } catch (e) {
      // the server is away: try again at the next tick
    }
    setTimeout(poll, every);
  }
  poll();
})();
