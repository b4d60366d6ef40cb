// zimg dashboard: renders /events (server-sent events) or /api/status into the page.
// Every string from the network goes in with textContent or an attribute set through the DOM,
// never as HTML: a node, file or error text that looks like markup shows as text.
"use strict";
(() => {
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function secs(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function num(v) { return v === null || v === undefined ? "" : String(v); }

  function cell(row, text, cls) { row.appendChild(el("td", text, cls)); }

  function renderNodes(st) {
    const body = $("nodes").tBodies[0];
    const rows = [];
    for (const n of st.nodes) {
      const tr = el("tr", null, n.state);
      tr.dataset.node = n.name;
      cell(tr, n.name, "name");
      cell(tr, n.role);
      cell(tr, n.state === "down" ? "down: " + (n.reason || "") : n.state, "state");
      cell(tr, n.host);
      cell(tr, num(n.cpus), "num");
      cell(tr, num(n.active), "num running");
      cell(tr, num(n.done), "num done");
      cell(tr, num(n.failed), "num failed");
      cell(tr, n.rate === null || n.rate === undefined ? "" : n.rate.toFixed(1), "num rate");
      cell(tr, n.last_seen_s === undefined ? "" : secs(n.last_seen_s) + " ago");
      cell(tr, secs(n.uptime_s));
      cell(tr, n.incarnation);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const more = st.nodes_total - st.nodes_listed;
    $("nodes-note").textContent = more > 0 ? more + " more nodes not listed" : "";
  }

  // A failover pair: each broker's role and state (or why it did not answer).
  function brokerText(b) {
    const describe = (f) => f ? " (" + f.role + ", " + f.state + ")" : "";
    if (b.pair && b.pair.length) {
      return "brokers " + b.pair.map((p) =>
        p.url + (p.state ? describe(p) : " (" + (p.error ? "no answer" : "?") + ")")).join(" · ");
    }
    return "broker " + b.url + describe(b.failover);
  }

  function renderSummary(st) {
    const b = st.broker;
    $("broker").textContent = brokerText(b);
    const stats = b.stats || {};
    const parts = [
      ["nodes", b.count], ["queued", b.queued], ["jobs done", stats.jobs_done],
      ["jobs failed", stats.jobs_failed], ["malformed", stats.malformed],
      ["rejected", stats.rejected], ["dropped", stats.dropped], ["late", stats.late_results],
      ["broker up", secs(b.uptime_s)],
    ];
    if (st.totals && st.totals.results) {
      parts.push(["results", st.totals.results], ["failed here", st.totals.failed]);
    }
    $("summary").replaceChildren(...parts.map(([k, v]) => el("span", k + ": " + num(v))));
  }

  function renderChart(st) {
    const chart = $("chart");
    const W = 800, H = 200, PAD = 24;
    const t = st.history.t;
    const names = Object.keys(st.history.series);
    let max = 1;
    for (const name of names) for (const v of st.history.series[name]) if (v > max) max = v;
    const items = [svg("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }),
      svg("line", { x1: PAD, y1: 0, x2: PAD, y2: H - PAD, class: "axis" })];
    const top = svg("text", { x: 2, y: 12 });
    top.textContent = max.toFixed(1);
    items.push(top);
    const legend = [];
    if (t.length > 1) {
      const t0 = t[0], span = Math.max(1e-9, t[t.length - 1] - t0);
      names.forEach((name, i) => {
        const color = COLORS[i % COLORS.length];
        const pts = [];
        st.history.series[name].forEach((v, j) => {
          if (v === null || v === undefined) return;
          const x = PAD + (W - PAD) * (t[j] - t0) / span;
          const y = (H - PAD) * (1 - v / max);
          pts.push(x.toFixed(1) + "," + y.toFixed(1));
        });
        items.push(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color,
          "stroke-width": 2 }));
        const key = el("span", name);
        const swatch = el("i");
        swatch.style.background = color;
        key.prepend(swatch);
        legend.push(key);
      });
      const label = svg("text", { x: W - 60, y: H - 6 });
      label.textContent = "last " + Math.round(span) + " s";
      items.push(label);
    }
    chart.replaceChildren(...items);
    $("legend").replaceChildren(...legend);
  }

  function renderResults(st) {
    if (!st.results.length) return;
    $("results-section").hidden = false;
    const figs = st.results.slice().reverse().map((r) => {
      const fig = el("figure", null, r.error ? "failed" : "ok");
      if (r.thumb) {
        const img = el("img");
        img.alt = r.name;
        img.src = "thumb/" + encodeURIComponent(String(r.id));
        fig.appendChild(img);
      }
      let caption = r.name + (r.node ? " · " + r.node : "");
      if (r.ms !== null && r.ms !== undefined) caption += " · " + r.ms + " ms";
      if (r.error) caption += " · " + r.error;
      fig.appendChild(el("figcaption", caption));
      return fig;
    });
    $("results").replaceChildren(...figs);
  }

  function renderEvents(st) {
    const items = st.events.slice().reverse().map((e) => {
      const li = el("li", null, e.kind);
      li.appendChild(el("span", "[" + e.kind + "] ", "kind"));
      li.appendChild(el("span", e.text, "text"));
      return li;
    });
    $("events").replaceChildren(...items);
  }

  function render(st) {
    renderSummary(st);
    renderNodes(st);
    renderChart(st);
    renderResults(st);
    renderEvents(st);
  }

  function badge(text, cls) {
    const b = $("live");
    b.textContent = text;
    b.className = "badge " + cls;
  }

  let polling = null;
  function poll() {
    fetch("api/status", { cache: "no-store" })
      .then((r) => r.json())
      .then((st) => { render(st); badge("polling", "ok"); })
      .catch(() => badge("no answer", "bad"));
  }

  function connect() {
    const source = new EventSource("events");
    source.onmessage = (ev) => {
      badge("live", "ok");
      render(JSON.parse(ev.data));
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (too many live views) or the server went away: poll instead.
        badge("polling", "bad");
        if (polling === null) polling = setInterval(poll, 2000);
        poll();
      } else {
        badge("reconnecting…", "bad");
      }
    };
  }

  connect();
})();
