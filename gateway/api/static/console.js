// Live alarm queue: every alarm or valve event re-reads the queue fragment (no reload, no lost state).
(function () {
  "use strict";
  const queue = document.getElementById("queue");
  const live = document.getElementById("live");
  let pending = false;
  async function refresh() {
    if (pending) return;
    pending = true;
    try {
      // Keep a note someone is typing: skip the refresh while a field has focus and text.
      const typing = document.activeElement && document.activeElement.name === "note" && document.activeElement.value;
      if (!typing) {
        const answer = await fetch("/console/alarms/queue", { credentials: "same-origin" });
        if (answer.status === 401) { window.location.reload(); return; }
        if (answer.ok) queue.innerHTML = await answer.text();
      }
    } finally {
      pending = false;
    }
  }
  const events = new EventSource("/api/events");
  events.addEventListener("alarm", refresh);
  events.addEventListener("valve", refresh);
  events.onopen = function () { live.classList.remove("down"); refresh(); };
  events.onerror = function () { live.classList.add("down"); };
  setInterval(refresh, 30000); // ages move on even when nothing happens
})();
