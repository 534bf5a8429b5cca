// The live incident queue. Every alarm or valve event re-reads the queue fragment and patches
// it in place: rows that did not change stay, a changed row is swapped with what the officer
// typed in it (note, minutes, focus, caret) carried over, so typing never pauses the queue.
// A new emergency is impossible to miss: a sound (once the page was clicked, as browsers
// require), a count in the tab title, a desktop notification; its row stays lit (server side)
// until acknowledged.
(function () {
  "use strict";
  const queue = document.getElementById("queue");
  const live = document.getElementById("live");
  const banner = document.getElementById("sound-banner");
  const baseTitle = document.title;
  const sound = new Audio("/static/alarm.wav");
  let armed = false; // a click happened: sound may play
  let known = null; // unacknowledged emergency alarm ids already announced
  let pending = false;
  let again = false;

  function unacked(root) {
    const ids = new Map();
    root.querySelectorAll("tr.incident[data-category=emergency]").forEach(function (row) {
      row.dataset.unacked.split(" ").filter(Boolean).forEach(function (id) { ids.set(id, row.dataset.title); });
    });
    return ids;
  }

  function ring() {
    if (!armed) return;
    sound.currentTime = 0;
    sound.play().catch(function () { banner.hidden = false; armed = false; });
  }

  function announce() {
    const data = queue.querySelector("#queue-data");
    const waiting = data ? Number(data.dataset.waiting) : 0;
    document.title = (waiting ? "(" + waiting + ") " : "") + baseTitle;
    const now = unacked(queue);
    if (known !== null) {
      const fresh = [...now.keys()].filter(function (id) { return !known.has(id); });
      if (fresh.length) {
        ring();
        if ("Notification" in window && Notification.permission === "granted") {
          new Notification(data.dataset.new, { body: now.get(fresh[0]), tag: fresh[0] });
        }
      }
    }
    known = new Set(now.keys());
  }

  function arm() {
    if (armed) return;
    armed = true;
    banner.hidden = true;
    if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem("gasgate-asked")) {
      localStorage.setItem("gasgate-asked", "1"); // asked once
      Notification.requestPermission();
    }
    if (unacked(queue).size) ring(); // the officer hears what is waiting, and that sound works
  }
  banner.addEventListener("click", arm);
  document.addEventListener("click", arm);

  // What the officer typed, by form and field, and where the caret was.
  function typed() {
    const kept = new Map();
    queue.querySelectorAll("form.act input:not([type=hidden])").forEach(function (input) {
      if (input.value !== input.defaultValue) kept.set(input.form.id + "/" + input.name, input.value);
    });
    const a = document.activeElement;
    const focus = a && a.form && queue.contains(a)
      ? { key: a.form.id + "/" + a.name, start: a.selectionStart, end: a.selectionEnd } : null;
    return { kept: kept, focus: focus };
  }

  function restore(state) {
    queue.querySelectorAll("form.act input:not([type=hidden])").forEach(function (input) {
      const key = input.form.id + "/" + input.name;
      if (state.kept.has(key) && input.value !== state.kept.get(key)) input.value = state.kept.get(key);
      if (state.focus && state.focus.key === key && document.activeElement !== input) {
        input.focus();
        try { input.setSelectionRange(state.focus.start, state.focus.end); } catch (e) { /* number */ }
      }
    });
  }

  function patch(html) {
    const state = typed();
    const fresh = document.createElement("div");
    fresh.innerHTML = html;
    const oldBody = queue.querySelector("#incidents");
    const newBody = fresh.querySelector("#incidents");
    if (!oldBody || !newBody) {
      queue.replaceChildren(...fresh.childNodes);
    } else {
      ["#queue-data", "nav.tabs"].forEach(function (sel) {
        const a = queue.querySelector(sel), b = fresh.querySelector(sel);
        if (a && b && a.outerHTML !== b.outerHTML) a.replaceWith(b);
      });
      const old = new Map();
      oldBody.querySelectorAll(":scope > tr").forEach(function (row) { old.set(row.dataset.key, row); });
      const rows = [...newBody.children].map(function (row) {
        const mine = old.get(row.dataset.key);
        old.delete(row.dataset.key);
        if (mine && mine.dataset.html === row.outerHTML) return mine; // unchanged: left alone
        row.dataset.html = row.outerHTML;
        if (mine) mine.replaceWith(row);
        return row;
      });
      rows.forEach(function (row, i) {
        const here = oldBody.children[i];
        if (here !== row) oldBody.insertBefore(row, here || null);
      });
      old.forEach(function (row) { row.remove(); });
    }
    restore(state);
    announce();
  }

  async function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    try {
      const answer = await fetch("/console/alarms/queue" + window.location.search, { credentials: "same-origin" });
      if (answer.status === 401) { window.location.reload(); return; }
      if (answer.ok) patch(await answer.text());
    } finally {
      pending = false;
      if (again) { again = false; refresh(); }
    }
  }

  queue.querySelectorAll("#incidents > tr").forEach(function (row) { row.dataset.html = row.outerHTML; });
  announce();
  const events = new EventSource("/api/events");
  events.addEventListener("alarm", refresh);
  events.addEventListener("valve", refresh);
  events.onopen = function () { live.classList.remove("down"); live.textContent = live.dataset.up; refresh(); };
  events.onerror = function () { live.classList.add("down"); live.textContent = live.dataset.down; };
  setInterval(refresh, 30000); // ages move on even when nothing happens
})();
