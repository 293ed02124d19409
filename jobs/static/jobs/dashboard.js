/*
 * The dashboard, live: its numbers are fetched again every few seconds,
 * rendered by the server's own template (dashboard_live.html), and folded
 * into the page node by node, so that a button being pressed, the focus and
 * the scroll position stay as they were. A hidden tab asks for nothing.
 * Without this script the page reloads itself instead (its <noscript>).
 */
"use strict";

(() => {
  const live = document.getElementById("jobs-live");
  const status = document.getElementById("jobs-live-status");
  if (!live || !status) {
    return;
  }
  const every = Number(live.dataset.seconds) * 1000;
  // A dashboard whose server is down or overloaded asks less and less often.
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
    return new Date(Number(live.dataset.readAt) * 1000).toLocaleTimeString([], { hour12: false });
  }

  function hidden() {
    return document.visibilityState === "hidden";
  }

  function plan(delay) {
    clearTimeout(timer);
    timer = null;
    if (hidden()) {
      say("Paused while the tab is hidden", "paused");
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
    if (busy || hidden()) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(live.dataset.url, {
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
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const next = page.getElementById("jobs-live");
      if (!next) {
        throw new Error("no live part in the answer");
      }
      morph(live, next);
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

  document.addEventListener("visibilitychange", () => {
    if (hidden()) {
      plan(every);
    } else {
      refresh();
    }
  });
  say(`Live · updated ${readAt()}`, "live");
  plan(every);
})();
