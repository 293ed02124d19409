/*
 * The admin's live pages. The dashboard, the job list and a workflow's page
 * each mark their live part (#jobs-live); this script fetches it again every
 * few seconds, rendered by the server's own template, and folds it into the
 * page node by node, so that a button being pressed, the focus and the
 * scroll position stay as they were. A hidden tab asks for nothing.
 *
 * The dashboard is always live (without this script it reloads itself: its
 * <noscript>) and fetches its live part alone (data-url). The job list and a
 * workflow's page fetch themselves, and only while their "Live" box is
 * ticked, a choice the browser remembers for each kind of page
 * (data-remember). Rows ticked for an action pause the updates: a row that
 * moved under a ticked box would change what the action acts on.
 */
"use strict";

(() => {
  const live = document.getElementById("jobs-live");
  const status = document.getElementById("jobs-live-status");
  if (!live || !status) {
    return;
  }
  const every = Number(live.dataset.seconds) * 1000;
  const toggle = live.dataset.toggle ? document.getElementById(live.dataset.toggle) : null;
  const remembered = live.dataset.remember ? `jobs-live:${live.dataset.remember}` : null;
  // A page whose server is down or overloaded asks less and less often.
  const longest = 60000;
  // A request that takes longer counts as failed, so that a hung one does
  // not stop the updates (only one request is in flight at a time).
  const patience = 15000;
  let timer = null;
  let busy = false;
  let failures = 0;

  function say(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  // When the server read the numbers shown: dashboards share a read, which
  // may be a little older than the fetch that brought it.
  function readAt() {
    const at = live.dataset.readAt ? new Date(Number(live.dataset.readAt) * 1000) : new Date();
    return at.toLocaleTimeString([], { hour12: false });
  }

  function hidden() {
    return document.visibilityState === "hidden";
  }

  function switchedOff() {
    return toggle !== null && !toggle.checked;
  }

  function selecting() {
    return live.querySelector("input.action-select:checked") !== null;
  }

  // Why the page is not updating now, if it is not.
  function halted() {
    if (switchedOff()) {
      return ["", "off"];
    }
    if (hidden()) {
      return ["Paused while the tab is hidden", "paused"];
    }
    if (selecting()) {
      return ["Paused while rows are selected", "paused"];
    }
    return null;
  }

  function plan(delay) {
    clearTimeout(timer);
    timer = null;
    const reason = halted();
    if (reason) {
      say(...reason);
    } else {
      timer = setTimeout(refresh, delay);
    }
  }

  // Nodes are matched by position and kind: the template renders the same
  // structure every time, so a row, a form or a button stays the same node
  // while its numbers change, and only what differs is written.
  function morph(current, next) {
    if (current.nodeType !== Node.ELEMENT_NODE) {
      if (current.nodeValue !== next.nodeValue) {
        current.nodeValue = next.nodeValue;
      }
      return;
    }
    for (const { name } of Array.from(current.attributes)) {
      if (!next.hasAttribute(name)) {
        current.removeAttribute(name);
      }
    }
    for (const { name, value } of Array.from(next.attributes)) {
      if (current.getAttribute(name) !== value) {
        current.setAttribute(name, value);
      }
    }
    const have = Array.from(current.childNodes);
    const want = Array.from(next.childNodes);
    want.forEach((node, index) => {
      const old = have[index];
      if (old === undefined) {
        current.append(document.importNode(node, true));
      } else if (old.nodeType === node.nodeType && old.nodeName === node.nodeName) {
        morph(old, node);
      } else {
        old.replaceWith(document.importNode(node, true));
      }
    });
    have.slice(want.length).forEach((node) => node.remove());
  }

  async function refresh() {
    if (busy || halted()) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(live.dataset.url || window.location.href, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
        signal: AbortSignal.timeout(patience),
      });
      if (response.redirected) {
        // To the login page: the session has ended, and polling cannot renew it.
        say("Signed out: reload the page to sign in", "stopped");
        return;
      }
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
      // A whole page's <style> carries that response's nonce, not this page's:
      // parsed here it would be refused under the CSP. Only #jobs-live is used.
      const text = (await response.text()).replace(/<style[\s\S]*?<\/style>/gi, "");
      const page = new DOMParser().parseFromString(text, "text/html");
      const next = page.getElementById("jobs-live");
      if (!next) {
        throw new Error("no live part in the answer");
      }
      // Rows ticked while the answer was on its way: keep what they show.
      if (!selecting()) {
        morph(live, next);
      }
      failures = 0;
      say(`Live · updated ${readAt()}`, "live");
      plan(every);
    } catch (error) {
      failures += 1;
      const wait = Math.min(every * 2 ** failures, longest);
      say(`Reconnecting: next try in ${Math.round(wait / 1000)} s (${error.message})`, "error");
      plan(wait);
    } finally {
      busy = false;
    }
  }

  function resume() {
    if (!halted()) {
      refresh();
    } else {
      plan(every);
    }
  }

  document.addEventListener("visibilitychange", resume);
  if (toggle) {
    toggle.closest("label").hidden = false;
    toggle.checked = remembered !== null && window.localStorage.getItem(remembered) === "on";
    toggle.addEventListener("change", () => {
      if (remembered) {
        window.localStorage.setItem(remembered, toggle.checked ? "on" : "off");
      }
      resume();
    });
    live.addEventListener("change", (event) => {
      if (event.target.classList.contains("action-select") || event.target.id === "action-toggle") {
        resume();
      }
    });
  }
  if (switchedOff()) {
    say("", "off");
  } else {
    say(`Live · updated ${readAt()}`, "live");
    plan(every);
  }
})();
