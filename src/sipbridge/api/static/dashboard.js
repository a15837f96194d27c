// sipbridge dashboard: the calls list (polled every second) and a live call's page (reloaded
// in place until the call ends). Call data is only ever set as text (textContent), never as
// HTML: SIP headers come from the internet.
"use strict";

(() => {
  const body = document.body;
  const POLL_MS = 1000;

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
    const cell = el("td", "", shortTime(epoch));
    cell.title = localTime(epoch);
    return cell;
  }

  function callRow(call) {
    const row = el("tr", call.live ? "live" : "");
    row.dataset.id = call.id;
    row.dataset.state = call.state;
    row.append(stateBadge(call.state, call.live));
    const id = el("td");
    const link = el("a", "mono", call.id);
    link.href = call.href;
    id.append(link);
    row.append(id, party(call.caller), party(call.callee),
      started(call.started), el("td", "num", call.duration),
      el("td", "", call.end_reason || (call.live ? "" : "-")));
    const transfer = el("td");
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

  if (body.dataset.page === "list") listPage();
  else if (body.dataset.page === "call") callPage();
})();
