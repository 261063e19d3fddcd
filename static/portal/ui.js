// Small page behaviours shared by every page: confirmation dialogs, the typed-name delete dialog,
// copy buttons, dismissible messages, filters that apply on change, and relative times that stay current.
// Everything here is an enhancement: without JavaScript the forms and links still work.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function onReady(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  // --- Confirm before destructive power actions (Force off) ----------------------------------
  function confirmAction(button) {
    var dialog = document.getElementById("confirm-dialog");
    var form = button.form;
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(button.dataset.confirm)) form.submit();
      return;
    }
    dialog.querySelector("[data-confirm-text]").textContent = button.dataset.confirm;
    dialog.querySelector(".dialog-title").textContent = button.textContent.trim() + "?";
    dialog.querySelector("[data-confirm-ok]").textContent = button.textContent.trim();
    dialog.returnValue = "";
    dialog.addEventListener("close", function handler() {
      dialog.removeEventListener("close", handler);
      if (dialog.returnValue === "ok") form.submit();
    });
    dialog.showModal();
  }

  // --- Copy a ready command (the ssh line) -------------------------------------------------------
  // data-copy="#field" copies an input's value; data-copy-text="…" copies the text itself (a checksum).
  function copyText(button) {
    var field = button.dataset.copy ? document.querySelector(button.dataset.copy) : null;
    var text = field ? field.value : button.dataset.copyText;
    if (text === undefined || text === null) return;
    var label = button.textContent;
    function done(ok) {
      button.textContent = ok ? "Copied" : "Select and copy";
      window.setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    var temporary = !field;
    if (temporary) {
      field = document.createElement("textarea");
      field.value = text;
      field.setAttribute("readonly", "");
      field.className = "visually-hidden";
      document.body.appendChild(field);
    }
    field.focus();
    field.select();  // plain http: the older way, or at least the text is selected for Ctrl-C
    try { done(document.execCommand("copy")); } catch (e) { done(false); }
    if (temporary) { field.remove(); button.focus(); }
  }

  // --- Delete: type the VM's name --------------------------------------------------------------
  function openDelete(trigger) {
    var dialog = document.getElementById("delete-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return false;
    var name = trigger.dataset.deleteName;
    var form = dialog.querySelector("[data-delete-form]");
    var input = form.querySelector("input[name=confirm_name]");
    var ok = form.querySelector("[data-delete-ok]");
    form.action = trigger.dataset.deleteUrl;
    dialog.querySelectorAll("[data-delete-name]").forEach(function (el) { el.textContent = name; });
    input.value = "";
    ok.disabled = true;
    input.oninput = function () { ok.disabled = input.value.trim() !== name; };
    dialog.showModal();
    input.focus();
    return true;
  }

  function closeMenus(except) {
    document.querySelectorAll("details.menu[open], details.user-menu[open]").forEach(function (d) {
      if (d !== except) d.removeAttribute("open");
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var confirmBtn = target.closest("button[data-confirm]");
    if (confirmBtn && !confirmBtn.disabled) {
      event.preventDefault();
      closeMenus();
      confirmAction(confirmBtn);
      return;
    }
    var del = target.closest("a[data-delete-url]");
    if (del) {
      if (del.getAttribute("aria-disabled") === "true") { event.preventDefault(); return; }
      if (openDelete(del)) { event.preventDefault(); closeMenus(); }
      return;
    }
    if (target.closest("[data-dialog-cancel]")) {
      target.closest("dialog").close();
      return;
    }
    var copy = target.closest("button[data-copy], button[data-copy-text]");
    if (copy) {
      copyText(copy);
      return;
    }
    if (target.closest("[data-dismiss]")) {
      target.closest(".message").remove();
      return;
    }
    closeMenus(target.closest("details"));
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeMenus();
  });

  onReady(function () {
    // The inline delete form on the detail page: enable its button only once the name matches.
    document.querySelectorAll("form[data-delete-inline]").forEach(function (form) {
      var input = form.querySelector("input[name=confirm_name]");
      var button = form.querySelector("button[type=submit]");
      var allowed = !button.disabled;
      function sync() { button.disabled = !allowed || input.value.trim() !== form.dataset.deleteName; }
      form.addEventListener("portal:allowed", function (e) { allowed = e.detail; sync(); });
      input.addEventListener("input", sync);
      sync();
    });
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    setInterval(refreshTimes, 30000);
  });

  // --- Relative times ("3 minutes ago"), exact time in the title --------------------------------
  function relative(date) {
    var seconds = Math.round((Date.now() - date.getTime()) / 1000);
    if (seconds < 45) return "just now";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + (minutes === 1 ? " minute ago" : " minutes ago");
    var hours = Math.round(minutes / 60);
    if (hours < 24) return hours + (hours === 1 ? " hour ago" : " hours ago");
    var days = Math.round(hours / 24);
    return days + (days === 1 ? " day ago" : " days ago");
  }
  function refreshTimes() {
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (!isNaN(date)) el.textContent = relative(date);
    });
  }
  window.PortalUI = { relative: relative };
})();
