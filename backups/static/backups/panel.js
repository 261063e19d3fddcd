// The Backups panel of the VM page: fetched again while a backup job runs (every 3 s), and when a
// backup job's state arrives over the live connection (portal:job, sent by portal/live.js). The swap
// waits while the user types in the panel or a confirmation dialog is open. (issue #11)
(function () {
  "use strict";
  if (window.__backupsPanel) return;
  window.__backupsPanel = true;
  var pending = false;

  function panels() { return Array.prototype.slice.call(document.querySelectorAll("[data-backups-panel]")); }

  function reload(panel) {
    if (pending) return;
    pending = true;
    fetch(panel.dataset.backupsUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { pending = false; if (html) swap(panel.dataset.backupsPanel, html); })
      .catch(function () { pending = false; });
  }

  function swap(vmId, html) {
    var current = document.querySelector('[data-backups-panel="' + vmId + '"]');
    if (!current) return;
    var focused = document.activeElement;
    if (document.querySelector("dialog[open]") ||
        (focused && current.contains(focused) && ["INPUT", "SELECT", "TEXTAREA"].indexOf(focused.tagName) !== -1)) {
      setTimeout(function () { swap(vmId, html); }, 1000);
      return;
    }
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var fresh = holder.querySelector("[data-backups-panel]");
    if (fresh) current.parentNode.replaceChild(fresh, current);
  }

  setInterval(function () {
    panels().forEach(function (p) { if (p.dataset.backupsBusy === "1") reload(p); });
  }, 3000);
  document.addEventListener("portal:job", function (e) {
    var ev = e.detail || {};
    if (String(ev.job_kind || "").indexOf("backup.") === 0) panels().forEach(reload);
  });
})();
