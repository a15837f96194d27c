// sipbridge dashboard: the calls list (polled every second), a live call's page (reloaded
// in place until the call ends) and the cluster's overview (polled every few seconds, its
// chart drawn here as SVG). Call and node data is only ever set as text (textContent) or
// as a number in an attribute, never as HTML: SIP headers come from the internet.
"use strict";

(() => {
  const body = document.body;
  const POLL_MS = 1000;
  const OVERVIEW_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["answered", "failed", "refused"];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function localTime(epoch) {
    return new Date(epoch * 1000).toLocaleString(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  // In the list: the time of day for today's calls, the date too for older ones.
  function shortTime(epoch) {
    const when = new Date(epoch * 1000);
    const time = when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    if (when.toDateString() === new Date().toDateString()) return time;
    return `${when.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
  }

  // Server-rendered times (UTC) shown in the browser's time zone.
  function localize(root) {
    for (const node of root.querySelectorAll("time[data-epoch]")) {
      node.textContent = localTime(Number(node.dataset.epoch));
      node.title = new Date(Number(node.dataset.epoch) * 1000).toISOString();
    }
  }

  function stateBadge(state, live) {
    const cell = el("td", "state-cell");
    if (live) cell.append(el("span", "live-dot"));
    cell.append(el("span", `state state-${state}`, state));
    return cell;
  }

  function party(uri) {
    const cell = el("td");
    const text = el("span", "party-text", uri);
    text.title = uri;
    cell.append(text);
    return cell;
  }

  function started(epoch) {
    const cell = el("td", "started-cell", shortTime(epoch));
    cell.title = localTime(epoch);
    return cell;
  }

  function callRow(call) {
    const row = el("tr", call.live ? "live" : "");
    row.dataset.id = call.id;
    row.dataset.state = call.state;
    row.append(stateBadge(call.state, call.live));
    const id = el("td", "id-cell");
    const link = el("a", "mono", call.id);
    link.href = call.href;
    link.title = call.id;
    id.append(link);
    const reason = el("td", "reason-cell", call.end_reason || (call.live ? "" : "-"));
    row.append(id, party(call.caller), party(call.callee),
      started(call.started), el("td", "num duration-cell", call.duration), reason);
    const transfer = el("td", "transfer-cell");
    if (call.transfer) {
      const badge = el("span", `outcome-badge tone-${call.transfer.tone}`, call.transfer.outcome);
      badge.title = [call.transfer.reason, call.transfer.target].filter(Boolean).join(" — ");
      transfer.append(badge);
    } else {
      transfer.append(el("span", "muted", "-"));
    }
    row.append(transfer);
    row.addEventListener("click", (event) => {
      if (!event.target.closest("a")) window.location.href = call.href;
    });
    return row;
  }

  function listPage() {
    const rows = document.getElementById("calls");
    const status = document.getElementById("status");
    const empty = document.getElementById("empty");
    async function poll() {
      try {
        const reply = await fetch(body.dataset.source, {
          cache: "no-store", headers: { Accept: "application/json" },
        });
        if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
        const data = await reply.json();
        rows.replaceChildren(...data.calls.map(callRow));
        empty.hidden = data.calls.length > 0;
        const live = data.calls.filter((c) => c.live).length;
        status.textContent = `${live} live · updated ${new Date().toLocaleTimeString()}`;
        status.classList.remove("error");
      } catch (error) {
        status.textContent = `cannot reach the gateway (${error.message}); retrying`;
        status.classList.add("error");
      }
      window.setTimeout(poll, POLL_MS);
    }
    poll();
  }

  function callPage() {
    localize(document);
    async function refresh() {
      try {
        const reply = await fetch(window.location.pathname, { cache: "no-store" });
        if (reply.ok) {
          const page = new DOMParser().parseFromString(await reply.text(), "text/html");
          const open = [...document.querySelectorAll("details[open][id]")].map((d) => d.id);
          document.getElementById("main").replaceWith(document.adoptNode(page.getElementById("main")));
          for (const id of open) document.getElementById(id)?.setAttribute("open", "");
          localize(document);
          document.title = page.title;
          body.dataset.live = page.body.dataset.live;
        }
      } catch (error) {
        // The gateway restarting: try again at the next tick.
      }
      if (body.dataset.live === "1") window.setTimeout(refresh, POLL_MS);
    }
    if (body.dataset.live === "1") window.setTimeout(refresh, POLL_MS);
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "-";
    return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  function age(value) {
    if (value < 60) return `${value.toFixed(1)} s ago`;
    return `${Math.floor(value / 60)} min ago`;
  }

  function nodeRow(node) {
    const row = el("tr", node.this ? "this-node" : "");
    row.dataset.node = node.name;
    row.dataset.state = node.state;
    const name = el("td", "node-name");
    name.append(el("span", "mono", node.name));
    if (node.this) name.append(el("span", "muted", " (this node)"));
    const state = el("td");
    state.append(el("span", `state state-node-${node.state}`, node.state));
    const api = el("td", "mono api-url", node.api_url || "-");
    api.title = node.api_url || "";
    const since = el("td", "", localTime(node.started_at));
    row.append(name, state, el("td", "num", node.live_calls), el("td", "num", node.refused),
      el("td", "num", age(node.heartbeat_age)), since, api);
    return row;
  }

  // Stacked bars, one per minute: answered at the bottom, then failed, then refused.
  function chart(data) {
    const width = 960, height = 240, left = 40, right = 8, top = 12, bottom = 24;
    const plot = height - top - bottom;
    const rows = data.per_minute;
    const total = (m) => KINDS.reduce((sum, kind) => sum + (m[kind] || 0), 0);
    const most = Math.max(1, ...rows.map(total));
    const step = (width - left - right) / rows.length;
    const bar = Math.max(1, step * 0.75);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
      "aria-label": "calls per minute" });
    for (const fraction of [0, 0.5, 1]) {
      const y = top + plot * (1 - fraction);
      root.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
      if (Number.isInteger(most * fraction)) {
        root.append(svg("text", { x: left - 6, y: y + 4, class: "axis y" }, most * fraction));
      }
    }
    rows.forEach((m, i) => {
      const x = left + i * step + (step - bar) / 2;
      let y = top + plot;
      for (const kind of KINDS) {
        const n = m[kind] || 0;
        if (!n) continue;
        const h = (n / most) * plot;
        y -= h;
        const rect = svg("rect", { x: x.toFixed(2), y: y.toFixed(2), width: bar.toFixed(2),
          height: h.toFixed(2), class: `bar ${kind}`, "data-minute": m.minute, "data-count": n });
        rect.append(svg("title", {}, `${clock(m.minute)}: ${n} ${kind}`));
        root.append(rect);
      }
    });
    const last = rows.length - 1;
    const marks = [[0, left, "start"], [Math.floor(last / 2), left + (Math.floor(last / 2) + 0.5) * step,
      "middle"], [last, width - right, "end"]];
    const picked = rows.length > 2 ? marks : rows.length === 2 ? [marks[0], marks[2]] : [marks[0]];
    for (const [i, x, anchor] of picked) {
      root.append(svg("text", { x, y: height - 6, class: `axis x ${anchor}` }, clock(rows[i].minute)));
    }
    return root;
  }

  function legend(data) {
    const items = KINDS.map((kind) => {
      const item = el("li", `key ${kind}`);
      const known = data.totals[kind] !== null;
      item.append(el("span", `swatch ${kind}`), el("span", "", kind),
        el("strong", "", known ? data.totals[kind] : "not known"));
      item.dataset.kind = kind;
      return item;
    });
    return items;
  }

  function figures(list, pairs) {
    list.replaceChildren(...pairs.map(([name, value]) => {
      const item = el("div");
      item.append(el("dt", "", name), el("dd", "", value));
      return item;
    }));
  }

  function transferRow(row) {
    const tr = el("tr");
    const outcome = el("td");
    outcome.append(el("span", `outcome-badge tone-${row.tone}`, row.outcome));
    tr.append(el("td", "", row.mode), outcome, el("td", "num", row.count));
    return tr;
  }

  function showOverview(data) {
    const unknown = data.nodes === null;
    document.getElementById("nodes").replaceChildren(...(data.nodes || []).map(nodeRow));
    document.getElementById("nodes-unknown").hidden = !unknown;
    document.querySelector("#cluster .table-wrap").hidden = unknown;
    document.getElementById("live-calls").textContent = data.live_calls;
    document.getElementById("source").textContent = data.source === "store"
      ? "figures of every node, from the call store"
      : "figures of this node only (no call store)";
    const setup = data.setup;
    figures(document.getElementById("setup-figures"), [["p50", seconds(setup.p50)],
      ["p95", seconds(setup.p95)], ["p99", seconds(setup.p99)], ["calls", setup.count]]);
    const turns = data.agent_turns;
    const bound = (value) => (value === null ? `> ${seconds(turns.top)}` : `≤ ${seconds(value)}`);
    if (turns && turns.count) {
      figures(document.getElementById("turn-figures"), [["p50", bound(turns.p50)],
        ["p95", bound(turns.p95)], ["p99", bound(turns.p99)], ["turns", turns.count]]);
    } else {
      figures(document.getElementById("turn-figures"), [["turns", turns ? 0 : "not known"]]);
    }
    document.getElementById("turn-note").textContent = `end of the caller's speech to the ` +
      `model's first audio; ${turns && turns.node ? `node ${turns.node}` : "this node"} ` +
      "since it started, as the bucket bounds of its histogram";
    document.getElementById("chart").replaceChildren(chart(data));
    document.getElementById("legend").replaceChildren(...legend(data));
    document.getElementById("transfer-outcomes").replaceChildren(...data.transfers.map(transferRow));
    document.getElementById("no-transfers").hidden = data.transfers.length > 0;
  }

  function overviewPage() {
    const status = document.getElementById("status");
    async function poll() {
      try {
        const reply = await fetch(body.dataset.source, {
          cache: "no-store", headers: { Accept: "application/json" },
        });
        if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
        showOverview(await reply.json());
        status.textContent = `updated ${new Date().toLocaleTimeString()}`;
        status.classList.remove("error");
      } catch (error) {
        status.textContent = `cannot reach the gateway (${error.message}); retrying`;
        status.classList.add("error");
      }
      window.setTimeout(poll, OVERVIEW_MS);
    }
    poll();
  }

  if (body.dataset.page === "list") listPage();
  else if (body.dataset.page === "call") callPage();
  else if (body.dataset.page === "overview") overviewPage();
})();
