// Small progressive enhancements for the admin UI; every page works without them.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    // Meters: widths come from data attributes (the CSP forbids inline styles).
    document.querySelectorAll("[data-pct]").forEach(function (el) {
      el.style.width = Math.min(100, Math.max(0, Number(el.dataset.pct))) + "%";
    });
    // Menu button on narrow screens.
    document.querySelectorAll("[data-toggle=nav]").forEach(function (btn) {
      btn.addEventListener("click", function () { btn.closest(".sidebar").classList.toggle("open"); });
    });
    // Ask before destructive actions.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.dataset.confirm)) { ev.preventDefault(); }
      });
    });
    // Show that a slow action (an echo) is running, and prevent double submits.
    document.querySelectorAll("button[data-busy]").forEach(function (btn) {
      btn.form.addEventListener("submit", function () {
        setTimeout(function () { btn.disabled = true; btn.textContent = btn.dataset.busy; }, 0);
      });
    });
    // Selects that save on change (role pickers).
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
    // Table rows that open what they show (the link in the row stays the keyboard's way in).
    document.querySelectorAll("tr[data-href]").forEach(function (tr) {
      tr.addEventListener("click", function (ev) {
        if (ev.target.closest("a, button, input, select") || window.getSelection().toString()) { return; }
        window.location.href = tr.dataset.href;
      });
    });
    // A study coming back from offsite: show its progress, open the viewer when it is back.
    document.querySelectorAll("[data-restore-status]").forEach(function (card) {
      if (!card.dataset.restoreState || card.dataset.restoreState === "failed") { return; }
      var meter = card.querySelector("[data-restore-meter]"), message = card.querySelector("[data-restore-message]");
      function poll() {
        fetch(card.dataset.restoreStatus, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (st) {
            if (!st) { setTimeout(poll, 2000); return; }
            card.dataset.restoreState = st.state;
            if (message) { message.textContent = st.message; }
            if (meter) { meter.style.width = (st.total ? Math.round(100 * st.done / st.total) : 0) + "%"; }
            if (st.state === "done") { window.location.href = card.dataset.viewerUrl; }
            else if (st.state === "failed") { window.location.reload(); }
            else { setTimeout(poll, 700); }
          }, function () { setTimeout(poll, 2000); });
      }
      poll();
    });
    // Copy a freshly created API token.
    document.querySelectorAll("[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var text = document.getElementById(btn.dataset.copy).textContent;
        if (navigator.clipboard) {
          navigator.clipboard.writeText(text).then(function () { btn.textContent = "Copied"; });
        } else {
          window.getSelection().selectAllChildren(document.getElementById(btn.dataset.copy));
        }
      });
    });
  });
})();
