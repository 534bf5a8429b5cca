// The alert page's live part (central/alert_page.py): polls /a/{token}/status every few
// seconds and rewrites the valve, the gas company's progress and the answers sent. Text only
// (textContent): nothing from the server is ever parsed as HTML. The page works without it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var form = document.querySelector("form.answers");
  if (form) {
    form.addEventListener("submit", function () {
      // one tap is one answer: a second tap while the first is on its way is ignored
      if (form.classList.contains("sending")) { return; }
      form.classList.add("sending");
      var note = form.querySelector(".sending");
      if (note) { note.hidden = false; }
      setTimeout(function () {
        form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  }
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-status");
  var every = 1000 * (parseFloat(live.getAttribute("data-poll-s")) || 5);

  function fill(list, items, classOf) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = typeof item === "string" ? item : item.text;
      if (classOf) { li.className = classOf(item); }
      list.appendChild(li);
    });
  }

  function apply(s) {
    var valve = document.getElementById("valve");
    valve.className = "valve " + (s.valve_closed ? "ok" : "danger");
    valve.hidden = !s.valve;
    document.getElementById("valve-text").textContent = s.valve;
    var hint = document.getElementById("valve-hint");
    hint.textContent = s.valve_hint;
    hint.hidden = !s.valve_hint;
    var gone = document.getElementById("gas-gone");
    gone.textContent = s.gas_gone;
    gone.hidden = !s.gas_gone;
    fill(document.getElementById("steps"), s.steps, function (step) {
      return step.done ? "done" : "waiting";
    });
    fill(document.getElementById("told-list"), s.answers);
    document.getElementById("told").hidden = s.answers.length === 0;
  }

  function poll() {
    fetch(url, { cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (r.status === 404 || r.status === 410) { return null; }  // the link ran out: stop
        if (!r.ok) { throw new Error(String(r.status)); }
        return r.json();
      })
      .then(function (s) {
        if (s) { apply(s); setTimeout(poll, every); }
      })
      .catch(function () { setTimeout(poll, every); });  // no signal for a moment: try again
  }
  setTimeout(poll, every);
})();
