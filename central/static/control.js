// The control room, live: /api/stream names the incidents that changed (at whichever instance);
// the queue re-reads just those rows and patches them in place, the incident page re-reads its
// live part (no form lives there, so typing is never interrupted).
(function () {
  "use strict";
  const live = document.getElementById("live");
  const part = document.getElementById("live-part");
  const queue = document.getElementById("rows-emergency");
  const baseTitle = document.title;

  async function html(url) {
    // Bounded: one read at a time (below), so a read that hung would stop every later one.
    const answer = await fetch(url, { credentials: "same-origin", signal: AbortSignal.timeout(15000) });
    if (answer.status === 401) { window.location.reload(); return null; }
    return answer.ok ? answer.text() : null;
  }

  function filters() {
    const params = new URLSearchParams(window.location.search);
    params.delete("tab");
    return params;
  }

  function place(row) {
    const body = document.getElementById("rows-" + row.dataset.category);
    if (!body) return;
    const key = [Number(row.dataset.rank), Number(row.dataset.opened)];
    for (const other of body.rows) {
      const k = [Number(other.dataset.rank), Number(other.dataset.opened)];
      if (key[0] < k[0] || (key[0] === k[0] && key[1] < k[1])) { body.insertBefore(row, other); return; }
    }
    body.appendChild(row);
  }

  // A new emergency is impossible to miss: a sound (once the page was clicked, as browsers
  // require), a count in the tab title, a desktop notification (permission asked once); its row
  // stays lit until every alarm in it is acknowledged at the gateway.
  const banner = document.getElementById("sound-banner");
  const sound = queue ? new Audio("/sound/alarm.wav") : null;
  let armed = false;
  let known = null; // unacknowledged emergencies already announced

  function unacked() {
    const rows = document.querySelectorAll("#rows-emergency tr.unacked");
    return new Map(Array.from(rows, (row) => [row.dataset.id, row.dataset.title]));
  }

  function ring() {
    if (!armed) return;
    sound.currentTime = 0;
    sound.play().catch(() => { banner.hidden = false; armed = false; });
  }

  function announce() {
    const now = unacked();
    document.title = (now.size ? "(" + now.size + ") " : "") + baseTitle;
    if (known !== null) {
      const fresh = [...now.keys()].filter((id) => !known.has(id));
      if (fresh.length) {
        ring();
        if ("Notification" in window && Notification.permission === "granted") {
          new Notification(banner.dataset.fresh, { body: now.get(fresh[0]), tag: "incident-" + fresh[0] });
        }
      }
    }
    known = new Set(now.keys());
  }

  function arm() {
    if (armed || !queue) return;
    armed = true;
    banner.hidden = true;
    if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem("gasgate-central-asked")) {
      localStorage.setItem("gasgate-central-asked", "1");
      Notification.requestPermission();
    }
    if (unacked().size) ring(); // the officer hears what is waiting, and that the sound works
  }
  document.addEventListener("click", arm);

  function counts() {
    for (const category of ["emergency", "maintenance"]) {
      const body = document.getElementById("rows-" + category);
      const count = document.getElementById("count-" + category);
      count.textContent = body.rows.length + (count.dataset.more || ""); // "+": more than shown
      body.closest("section").querySelector(".empty").hidden = body.rows.length > 0;
    }
    announce();
  }

  async function patchQueue(ids) {
    const params = filters();
    if (ids) params.set("ids", ids.join(","));
    const text = await html("/console/rows?" + params.toString());
    if (text === null) return;
    const fresh = document.createElement("tbody");
    fresh.innerHTML = text;
    if (ids) {
      for (const id of ids) document.querySelectorAll('tr[data-id="' + id + '"]').forEach((r) => r.remove());
    } else {
      for (const category of ["emergency", "maintenance"]) document.getElementById("rows-" + category).replaceChildren();
    }
    const open = !params.has("state") || params.get("state") === "open";
    for (const row of Array.from(fresh.rows)) {
      if (!open || row.dataset.state !== "closed") place(row);
    }
    counts();
  }

  async function patchIncident() {
    const text = await html("/incidents/" + part.dataset.incident + "/live");
    if (text === null) return;
    const fresh = document.createElement("div");
    fresh.innerHTML = text;
    // A run of valve changes the officer opened stays open.
    const opened = Array.from(document.querySelectorAll("#live-body details[open]"), (d) => d.dataset.run);
    opened.forEach((run) => { const d = fresh.querySelector('details[data-run="' + run + '"]'); if (d) d.open = true; });
    for (const id of ["live-head", "live-body"]) {
      const now = document.getElementById(id);
      const next = fresh.querySelector("#" + id);
      if (now && next) now.replaceWith(next);
    }
    showSteps();
  }

  function showSteps() {
    const head = document.querySelector("#live-head [data-state]");
    const state = head ? head.dataset.state : "";
    // A step taken again: alarms that joined after the acknowledgement, or cleared after the
    // resolve, still to be told to the gateway.
    const again = head ? head.dataset.again.split(" ") : [];
    document.querySelectorAll("form[data-from]").forEach((form) => {
      // The form a refused step came back in stays, with what was typed in it.
      form.hidden = !form.dataset.from.split(" ").includes(state) && !("kept" in form.dataset)
        && !again.includes(form.dataset.action);
    });
    // No resolve button while an alarm is still active (it would be refused): why, instead.
    const waits = head ? head.dataset.waits : "";
    const why = document.querySelector("form[data-action=resolve] .waits");
    if (why) {
      why.textContent = waits;
      why.hidden = !waits;
      why.parentElement.querySelector("button").hidden = Boolean(waits);
    }
  }

  // Changes that arrive together are read together: a burst costs one request, not one each.
  // One read at a time, the changes that come meanwhile gathered into the next: two reads in
  // flight could land in the other order and leave a row (a valve) as it was before.
  let waiting = null; // ids to read; "all" for everything
  let reading = false;
  function changed(ids) {
    if (part) {
      if (ids !== null && !ids.includes(Number(part.dataset.incident))) return;
    } else if (!queue) {
      return;
    }
    waiting = ids === null || waiting === "all" ? "all" : (waiting || []).concat(ids);
    if (!reading) {
      reading = true;
      setTimeout(read, 100);
    }
  }

  async function read() {
    while (waiting !== null) {
      const now = waiting;
      waiting = null;
      try {
        await (part ? patchIncident() : patchQueue(now === "all" ? null : Array.from(new Set(now))));
      } catch {
        // Not reached or timed out: the next change, the stream's reconnect or the minute's
        // re-read reads again.
      }
    }
    reading = false;
  }

  document.querySelectorAll(".tabs a[data-tab]").forEach((tab) => {
    tab.addEventListener("click", (event) => {
      event.preventDefault();
      document.querySelectorAll(".tabs a[data-tab]").forEach((t) => t.classList.toggle("on", t === tab));
      document.querySelectorAll("section.tab").forEach((s) => { s.hidden = s.dataset.tab !== tab.dataset.tab; });
    });
  });
  if (part) showSteps();
  if (queue) counts();

  const stream = new EventSource("/api/stream");
  stream.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.incidents) changed(data.incidents.map((i) => i.incident_id));
  };
  stream.addEventListener("resync", () => changed(null));
  // Connected (again): what changed between the page's render (or the loss) and now was told
  // to nobody listening here, so everything is read again.
  stream.onopen = () => { if (live) { live.classList.remove("down"); live.title = ""; } changed(null); };
  stream.onerror = () => { if (live) { live.classList.add("down"); live.title = live.dataset.down; } };
  setInterval(() => changed(null), 60000); // ages move on even when nothing happens
})();
