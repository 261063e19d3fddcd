// Live updates: VM states and job progress redrawn in place, no page reloads.
// Events arrive over the websocket (/ws/updates/); when it cannot connect, the same events are
// fetched from /vms/status.json every few seconds. Event shapes: vms.services.vm_event and
// portal.jobs._job_event. The page's config (button rules, labels) comes from #live-config.
(function () {
  "use strict";
  var configEl = document.getElementById("live-config");
  if (!configEl || !("querySelectorAll" in document)) return;
  var config = JSON.parse(configEl.textContent);
  var rules = config.rules || {};
  var indicator = document.getElementById("live-indicator");
  var announcer = document.getElementById("live-announcer");
  var socket = null;
  var pollTimer = null;
  var retries = 0;

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }
  function attrEq(name, value) { return "[" + name + '="' + String(value).replace(/"/g, "") + '"]'; }

  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function setIndicator(state) {
    if (!indicator) return;
    indicator.hidden = false;
    indicator.dataset.state = state;
    indicator.querySelector(".live-text").textContent =
      state === "live" ? "Live" : state === "polling" ? "Live (polling)" : "Live updates off";
  }

  // --- VMs --------------------------------------------------------------------------------------
  function allowed(action, status) { return (rules[action] || []).indexOf(status) !== -1; }

  function setBadge(badge, status, label, busy) {
    badge.className = "badge badge-" + status + (busy ? " is-busy" : "");
    var text = badge.querySelector("[data-vm-status-label]");
    if (text) text.textContent = label;
  }

  function applyVm(ev) {
    // The snapshots and network panels depend on the VM's state: redraw them when that changes. The
    // network panel also when its NICs changed (`nics` is their fingerprint, sent by the server's poll).
    // Not for a VM on its way out: its panels would be fetched after it is gone (404).
    var leaving = ev.status === "deleting" || ev.status === "deleted";
    $all(document, attrEq("data-snapshots-panel", ev.id)).forEach(function (panel) {
      if (panel.dataset.vmStatus !== ev.status && !leaving) reloadPanel("snapshots", panel);
    });
    $all(document, attrEq("data-cdrom-panel", ev.id)).forEach(function (panel) {
      if (panel.dataset.vmStatus !== ev.status && !leaving) reloadPanel("cdrom", panel);
    });
    $all(document, attrEq("data-disks-panel", ev.id)).forEach(function (panel) {
      if (panel.dataset.vmStatus !== ev.status && !leaving) reloadPanel("disks", panel);
    });
    $all(document, attrEq("data-nics-panel", ev.id)).forEach(function (panel) {
      if (leaving) return;
      var nicsChanged = ev.nics !== undefined && panel.dataset.nicsSig !== ev.nics;
      if (panel.dataset.vmStatus !== ev.status || nicsChanged) reloadPanel("nics", panel);
    });
    var nodes = $all(document, attrEq("data-vm-id", ev.id));
    if (!nodes.length) {
      if (ev.status !== "deleted" && document.querySelector("[data-vm-table]")) {
        var notice = document.querySelector("[data-new-vms]");
        if (notice) notice.hidden = false;
      }
      return;
    }
    var label = ev.status_label || config.statusLabels[ev.status] || ev.status;
    var busy = config.transitional.indexOf(ev.status) !== -1;
    nodes.forEach(function (node) {
      var previous = node.dataset.vmStatus;
      node.dataset.vmStatus = ev.status;
      $all(node, "[data-vm-badge]").forEach(function (b) { setBadge(b, ev.status, label, busy); });
      if (ev.name) {
        $all(node, "[data-vm-name-text]").forEach(function (el) { if (el.textContent !== ev.name) el.textContent = ev.name; });
      }
      $all(node, "button[data-action]").forEach(function (btn) {
        btn.disabled = !allowed(btn.dataset.action, ev.status);
      });
      $all(node, "a[data-action]").forEach(function (a) {
        a.setAttribute("aria-disabled", allowed(a.dataset.action, ev.status) ? "false" : "true");
      });
      $all(node, "form[data-delete-inline]").forEach(function (f) {
        f.dispatchEvent(new CustomEvent("portal:allowed", { detail: allowed("delete", ev.status) }));
      });
      var consoleOk = allowed("console", ev.status);
      $all(node, "[data-console]").forEach(function (a) { a.setAttribute("aria-disabled", consoleOk ? "false" : "true"); });
      $all(node, "[data-console-hint]").forEach(function (el) { el.hidden = consoleOk; });
      $all(node, "[data-template-hint]").forEach(function (el) { el.hidden = allowed("template", ev.status); });
      $all(node, "[data-vm-power]").forEach(function (el) { el.textContent = ev.power_state || "—"; });
      if (ev.address !== undefined) {
        $all(node, "[data-vm-address]").forEach(function (el) { el.textContent = ev.address || "—"; });
      }
      $all(node, "[data-vm-error]").forEach(function (el) {
        var text = el.querySelector("[data-vm-error-text]") || el;
        text.textContent = ev.last_error || "";
        el.hidden = !ev.last_error;
      });
      if (ev.status === "deleted") {
        if (node.matches("tr")) {
          node.classList.add("is-gone");
          window.setTimeout(function () { node.remove(); }, 1500);
        } else {
          $all(document, "[data-vm-gone]").forEach(function (el) { el.hidden = false; });
          $all(node, "button[data-action], form[data-delete-inline] button").forEach(function (b) { b.disabled = true; });
        }
      }
      if (previous && previous !== ev.status) announce((ev.name || "The VM") + " is now " + label + ".");
    });
  }

  // --- Jobs -------------------------------------------------------------------------------------
  function paintJob(node, ev) {
    var active = config.jobActive.indexOf(ev.status) !== -1;
    $all(node, "[data-job-badge]").forEach(function (b) {
      b.className = "badge job-" + ev.status + (active ? " is-busy" : "");
      var t = b.querySelector("[data-job-status-label]");
      if (t) t.textContent = config.jobStatusLabels[ev.status] || ev.status;
    });
    $all(node, "[data-job-progress]").forEach(function (bar) {
      bar.setAttribute("aria-valuenow", ev.progress);
      bar.classList.toggle("is-done", ev.status === "succeeded");
      bar.classList.toggle("is-failed", ev.status === "failed" || ev.status === "errored");
      var inner = bar.querySelector(".progress-bar");
      if (inner) inner.style.width = ev.progress + "%";
    });
    $all(node, "[data-job-percent]").forEach(function (el) { el.textContent = ev.progress + "%"; });
    $all(node, "[data-job-step]").forEach(function (el) { el.textContent = ev.step || ""; });
    $all(node, "[data-job-error]").forEach(function (el) { el.textContent = ev.error || ""; el.hidden = !ev.error; });
    $all(node, "[data-job-label]").forEach(function (el) {
      if (!el.textContent) el.textContent = config.jobLabels[ev.job_kind] || ev.job_kind;
    });
  }

  function jobRowFromTemplate(ev) {
    var template = document.getElementById("job-row-template");
    if (!template) return null;
    var row = template.content.firstElementChild.cloneNode(true);
    row.dataset.jobId = ev.id;
    var link = row.querySelector("[data-job-link]");
    if (link) link.href = "/jobs/" + ev.id + "/";
    return row;
  }

  function progressBlock(ev) {
    var wrap = document.createElement("div");
    wrap.className = "row-job-inner";
    wrap.dataset.jobId = ev.id;
    wrap.innerHTML =
      '<div class="progress-wrap"><div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"' +
      ' aria-valuenow="0" data-job-progress><div class="progress-bar" style="width:0%"></div></div>' +
      '<span class="progress-num" data-job-percent>0%</span></div><div class="job-step" data-job-step></div>';
    return wrap;
  }

  function applyJob(ev) {
    var active = config.jobActive.indexOf(ev.status) !== -1;
    var known = $all(document, attrEq("data-job-id", ev.id));
    if (ev.target_type === "vm") {
      // The VM's own job table (detail page): a new job gets a new row at the top.
      $all(document, attrEq("data-vm-jobs", ev.target_id)).forEach(function (tbody) {
        if (tbody.querySelector(attrEq("data-job-id", ev.id))) return;
        var row = jobRowFromTemplate(ev);
        if (!row) return;
        var empty = tbody.querySelector(".empty-row");
        if (empty) empty.remove();
        tbody.insertBefore(row, tbody.firstChild);
        known.push(row);
      });
      // The current-job banner (detail page) and the inline progress in the VM's row (list page).
      $all(document, attrEq("data-vm-active-job", ev.target_id) + ", " + attrEq("data-vm-job-slot", ev.target_id))
        .forEach(function (slot) {
          var inner = slot.querySelector("[data-job-id]");
          if (active && (!inner || inner.dataset.jobId !== ev.id)) {
            if (slot.hasAttribute("data-vm-active-job")) {
              slot.innerHTML = '<div class="active-job-inner"><div class="active-job-title"><strong data-job-label></strong> ' +
                '<span class="badge" data-job-badge><span class="badge-dot" aria-hidden="true"></span>' +
                '<span data-job-status-label></span></span></div></div>';
              var box = slot.firstElementChild;
              box.dataset.jobId = ev.id;
              box.appendChild(progressBlock(ev));
              inner = box;
            } else {
              slot.innerHTML = "";
              inner = progressBlock(ev);
              slot.appendChild(inner);
            }
            known.push(inner);
          }
          if (inner && inner.dataset.jobId === ev.id) {
            slot.hidden = !active;
          }
        });
    }
    known.forEach(function (node) { paintJob(node, ev); });
    if (ev.target_type === "vm" && String(ev.job_kind || "").indexOf("vm.snapshot.") === 0) {
      refreshPanels("snapshots", ev);
    }
    if (ev.target_type === "vm" && String(ev.job_kind || "").indexOf("vm.nic.") === 0) {
      refreshPanels("nics", ev);
    }
    if (ev.target_type === "vm" && String(ev.job_kind || "").indexOf("vm.cdrom.") === 0) {
      refreshPanels("cdrom", ev);
    }
    if (ev.target_type === "vm" && String(ev.job_kind || "").indexOf("vm.disk") === 0) {
      refreshPanels("disks", ev);
    }
    if (!active && known.length) {
      if (ev.status === "failed" || ev.status === "errored") {
        announce((config.jobLabels[ev.job_kind] || ev.job_kind) + " failed: " + (ev.error || ""));
      }
    }
  }

  // Panels of the detail page that the server renders again when what they show changes: the
  // snapshots (snapshot jobs) and the network (NIC jobs, addresses seen by the monitor).
  var PANELS = {
    snapshots: { attr: "data-snapshots-panel", url: "snapshotsUrl", keep: ["#id_snapshot_name"] },
    nics: { attr: "data-nics-panel", url: "nicsUrl", keep: ["#id_nic_network", "#id_nic_model"] },
    cdrom: { attr: "data-cdrom-panel", url: "cdromUrl", keep: ["#id_cdrom_image"] },
    disks: { attr: "data-disks-panel", url: "disksUrl",
             keep: ["#id_disk_size_gib", "#id_disk_label", "#id_disk_bus", "#id_disk_pool", "#id_disk_volume"] }
  };

  var panelJobStatus = {};
  function refreshPanels(kind, ev) {
    var key = kind + ":" + ev.id;
    if (panelJobStatus[key] === ev.status) return;
    panelJobStatus[key] = ev.status;
    $all(document, attrEq(PANELS[kind].attr, ev.target_id)).forEach(function (panel) { reloadPanel(kind, panel); });
  }

  // A panel is fetched again at most one request at a time; a newer answer always wins, and the
  // swap waits while the user is in a confirmation dialog or typing or choosing in the panel.
  var panelSeq = {};
  function reloadPanel(kind, panel) {
    var vmId = panel.getAttribute(PANELS[kind].attr);
    var key = kind + ":" + vmId;
    var seq = panelSeq[key] = (panelSeq[key] || 0) + 1;
    fetch(panel.dataset[PANELS[kind].url], { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) swapPanel(kind, vmId, seq, html); })
      .catch(function () {});
  }

  function swapPanel(kind, vmId, seq, html) {
    var spec = PANELS[kind];
    if (panelSeq[kind + ":" + vmId] !== seq) return;  // an older answer: a newer request is under way
    var current = document.querySelector(attrEq(spec.attr, vmId));
    if (!current) return;
    var focused = document.activeElement;
    var busy = document.querySelector("dialog[open]") ||
      (focused && current.contains(focused) && ["INPUT", "SELECT", "TEXTAREA"].indexOf(focused.tagName) !== -1);
    if (busy) {
      setTimeout(function () { swapPanel(kind, vmId, seq, html); }, 1000);
      return;
    }
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var fresh = holder.querySelector("[" + spec.attr + "]");
    if (!fresh) return;
    var kept = spec.keep.map(function (sel) { var el = current.querySelector(sel); return el ? el.value : ""; });
    current.parentNode.replaceChild(fresh, current);
    spec.keep.forEach(function (sel, i) {  // what the user typed or chose stays
      var el = fresh.querySelector(sel);
      if (!el || !kept[i]) return;
      if (el.tagName === "SELECT" && !$all(el, "option").some(function (o) { return o.value === kept[i]; })) return;
      el.value = kept[i];
    });
  }

  // VMs on the page that the server no longer lists (deleted while the page loaded) go away.
  function markMissing(ids) {
    var seen = {};
    ids.forEach(function (id) { seen[String(id)] = true; });
    $all(document, "[data-vm-id]").forEach(function (node) {
      var id = node.dataset.vmId;
      if (!seen[id] && node.dataset.vmStatus !== "deleted") {
        applyVm({ kind: "vm", id: id, name: node.dataset.vmName, status: "deleted", status_label: "Deleted",
                  power_state: "", last_error: "" });
      }
    });
  }

  function handle(ev) {
    if (!ev || typeof ev !== "object") return;
    if (ev.kind === "vm") applyVm(ev);
    else if (ev.kind === "job") {
      applyJob(ev);
      // Page scripts that follow a job of their own (the image library's import) listen for this.
      document.dispatchEvent(new CustomEvent("portal:job", { detail: ev }));
    }
    else if (ev.kind === "snapshot") markMissing(ev.vm_ids || []);
    else if (ev.kind === "vm_snapshots") {
      $all(document, attrEq("data-snapshots-panel", ev.id)).forEach(function (p) { reloadPanel("snapshots", p); });
    }
    else if (ev.kind === "vm_nics") {
      $all(document, attrEq("data-nics-panel", ev.id)).forEach(function (p) { reloadPanel("nics", p); });
    }
    else if (ev.kind === "vm_cdrom") {
      $all(document, attrEq("data-cdrom-panel", ev.id)).forEach(function (p) { reloadPanel("cdrom", p); });
    }
    else if (ev.kind === "vm_disks") {
      $all(document, attrEq("data-disks-panel", ev.id)).forEach(function (p) { reloadPanel("disks", p); });
    }
    else if (ev.kind === "vm.sample") {
      // A new monitoring sample of a VM this page watches (the charts append it: monitoring/charts.js).
      document.dispatchEvent(new CustomEvent("portal:vm-sample", { detail: ev }));
    }
  }

  // Elements with data-live-watch-vm="ID" ask the connection for that VM's detailed events (its new
  // monitoring samples); the server checks the user may see the VM. Asked again on every (re)connect.
  function sendWatches() {
    if (!socket || socket.readyState !== 1) return;
    $all(document, "[data-live-watch-vm]").forEach(function (node) {
      var id = parseInt(node.getAttribute("data-live-watch-vm"), 10);
      if (id > 0) socket.send(JSON.stringify({ type: "watch", vm: id }));
    });
  }

  // --- Transport: websocket first, polling as the fallback -----------------------------------
  function poll() {
    fetch(config.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) { stopPolling(); setIndicator("off"); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        data.vms.forEach(handle);
        markMissing(data.vms.map(function (ev) { return ev.id; }));
        data.jobs.slice().reverse().forEach(handle);
      })
      .catch(function () { /* offline for a moment: try again on the next tick */ });
  }

  function startPolling() {
    setIndicator("polling");
    if (pollTimer) return;
    poll();
    pollTimer = window.setInterval(poll, (config.pollSeconds || 3) * 1000);
  }

  function stopPolling() {
    if (pollTimer) window.clearInterval(pollTimer);
    pollTimer = null;
  }

  function connect() {
    if (!("WebSocket" in window)) { startPolling(); return; }
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.wsPath;
    try {
      socket = new WebSocket(url);
    } catch (e) {
      startPolling();
      return;
    }
    socket.onopen = function () {
      retries = 0;
      stopPolling();
      setIndicator("live");
      sendWatches();
    };
    socket.onmessage = function (message) {
      try { handle(JSON.parse(message.data)); } catch (e) { /* ignore a malformed frame */ }
    };
    socket.onclose = function () {
      socket = null;
      startPolling();
      retries += 1;
      window.setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, retries)));
    };
  }

  window.PortalLive = { handle: handle, poll: poll, watch: sendWatches };
  connect();
})();
