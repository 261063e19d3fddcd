// Monitoring charts (issue #14): CPU %, memory, disk and network throughput of a VM (its page's
// Monitoring panel) or a host (its admin page), drawn with the vendored uPlot from the metrics API.
// Each [data-metrics] element holds range buttons and one [data-chart] box per chart. On the last
// hour a VM's new samples arrive over the live connection (portal:vm-sample, sent by portal/live.js)
// and are appended without a reload; without one (the websocket cannot connect, or the monitor
// runs in another process without a shared channel layer) the series is fetched again every step.
(function () {
  "use strict";
  if (window.__portalCharts) return;
  window.__portalCharts = true;

  var SPANS = { "1h": 3600, "1d": 86400, "1w": 7 * 86400 };
  var CHARTS = {
    cpu: { title: "CPU", unit: "pct", series: [{ key: "cpu_pct", label: "CPU %", color: "#0969da" }], range: [0, 100] },
    memory: { title: "Memory", unit: "bytes", series: [
      { key: "mem_used_bytes", label: "Used", color: "#8250df" },
      { key: "memory_bytes", label: "Size", color: "#8c959f", dash: [4, 4] }] },
    disk: { title: "Disk", unit: "bps", series: [
      { key: "disk_read_bps", label: "Read", color: "#1a7f37" },
      { key: "disk_write_bps", label: "Write", color: "#bc4c00" }] },
    network: { title: "Network", unit: "bps", series: [
      { key: "net_rx_bps", label: "Received", color: "#0969da" },
      { key: "net_tx_bps", label: "Sent", color: "#cf222e" }] }
  };

  function human(value, unit) {
    if (value == null) return "—";
    if (unit === "pct") return value.toFixed(value < 10 ? 1 : 0) + " %";
    var units = unit === "bps" ? ["B/s", "KiB/s", "MiB/s", "GiB/s"] : ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return (value < 10 && i > 0 ? value.toFixed(1) : Math.round(value)) + " " + units[i];
  }

  function Panel(root) {
    this.root = root;
    this.url = root.getAttribute("data-metrics-url");
    this.vmId = parseInt(root.getAttribute("data-metrics-vm") || "0", 10);
    this.range = root.getAttribute("data-metrics-range") || "1h";
    this.points = [];
    this.step = 30;
    this.plots = {};
    this.lastLive = 0;
    this.timer = null;
    var self = this;
    Array.prototype.slice.call(root.querySelectorAll("[data-metrics-range-button]")).forEach(function (btn) {
      btn.addEventListener("click", function () { self.setRange(btn.getAttribute("data-metrics-range-button")); });
    });
    document.addEventListener("portal:vm-sample", function (e) { self.live(e.detail); });
    window.addEventListener("resize", function () { self.resize(); });
    this.load();
  }

  Panel.prototype.setRange = function (range) {
    if (!SPANS[range]) return;
    this.range = range;
    this.root.setAttribute("data-metrics-range", range);
    Array.prototype.slice.call(this.root.querySelectorAll("[data-metrics-range-button]")).forEach(function (btn) {
      btn.setAttribute("aria-pressed", btn.getAttribute("data-metrics-range-button") === range ? "true" : "false");
    });
    this.load();
  };

  Panel.prototype.load = function () {
    var self = this;
    var range = this.range;
    fetch(this.url + "?range=" + encodeURIComponent(range), { credentials: "same-origin", cache: "no-store",
                                                              headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || range !== self.range) return;
        self.step = data.step_seconds || 30;
        self.points = data.points || [];
        self.draw();
        self.schedule();
      })
      .catch(function () { self.schedule(); });
  };

  // The fallback: fetch again one step later unless a live sample came in meanwhile.
  Panel.prototype.schedule = function () {
    var self = this;
    if (this.timer) window.clearTimeout(this.timer);
    this.timer = window.setTimeout(function () {
      if (Date.now() - self.lastLive > self.step * 1500) self.load(); else self.schedule();
    }, Math.max(5, this.step) * 1000);
  };

  Panel.prototype.live = function (ev) {
    if (!ev || ev.id !== this.vmId || !ev.point || this.range !== "1h") return;
    this.lastLive = Date.now();
    var last = this.points.length ? this.points[this.points.length - 1].t : 0;
    if (ev.point.t <= last) return;
    this.points.push(ev.point);
    var since = ev.point.t - SPANS[this.range];
    while (this.points.length && this.points[0].t <= since) this.points.shift();
    this.draw();
  };

  // Columns for uPlot, with a null wherever the series has a gap (the VM did not run).
  Panel.prototype.columns = function (spec) {
    var xs = [], cols = spec.series.map(function () { return []; });
    var gap = this.step * 2.5, prev = null;
    this.points.forEach(function (p) {
      if (prev !== null && p.t - prev > gap) {
        xs.push(prev + 1);
        cols.forEach(function (c) { c.push(null); });
      }
      xs.push(p.t);
      spec.series.forEach(function (s, i) { cols[i].push(p[s.key] == null ? null : p[s.key]); });
      prev = p.t;
    });
    return [xs].concat(cols);
  };

  Panel.prototype.width = function (box) { return Math.max(240, box.clientWidth || 320); };

  Panel.prototype.draw = function () {
    var self = this;
    var empty = this.root.querySelector("[data-metrics-empty]");
    if (empty) empty.hidden = this.points.length > 0;
    Array.prototype.slice.call(this.root.querySelectorAll("[data-chart]")).forEach(function (box) {
      var name = box.getAttribute("data-chart");
      var spec = CHARTS[name];
      if (!spec) return;
      var data = self.columns(spec);
      box.setAttribute("data-points", String(self.points.length));
      var latest = self.points.length ? self.points[self.points.length - 1] : null;
      var now = box.parentNode.querySelector("[data-chart-now]");
      if (now) now.textContent = latest ? spec.series.map(function (s) { return s.label + " " + human(latest[s.key], spec.unit); }).join(" · ") : "";
      if (self.plots[name]) { self.plots[name].setData(data); return; }
      if (typeof window.uPlot !== "function") return;
      var opts = {
        width: self.width(box), height: 160, legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: spec.range ? { range: spec.range } : { range: function (u, min, max) { return [0, Math.max(max || 0, 1) * 1.1]; } } },
        axes: [{ stroke: "#59636e", grid: { stroke: "rgba(128,128,128,.15)" } },
               { stroke: "#59636e", size: 70, grid: { stroke: "rgba(128,128,128,.15)" },
                 values: function (u, vals) { return vals.map(function (v) { return human(v, spec.unit); }); } }],
        series: [{}].concat(spec.series.map(function (s) {
          return { label: s.label, stroke: s.color, width: 1.5, dash: s.dash, spanGaps: false,
                   fill: s.dash ? undefined : s.color + "22",
                   value: function (u, v) { return human(v, spec.unit); } };
        }))
      };
      self.plots[name] = new window.uPlot(opts, data, box);
    });
  };

  Panel.prototype.resize = function () {
    var self = this;
    Object.keys(this.plots).forEach(function (name) {
      var box = self.root.querySelector('[data-chart="' + name + '"]');
      if (box) self.plots[name].setSize({ width: self.width(box), height: 160 });
    });
  };

  function start() {
    Array.prototype.slice.call(document.querySelectorAll("[data-metrics]")).forEach(function (root) {
      if (!root.__panel) root.__panel = new Panel(root);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
