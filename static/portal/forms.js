// Create VM form: validate the name as you type (the same rules and words as vms/validation.py;
// the server stays the authority), show the custom size fields only for "Custom", say whether
// the chosen size fits the remaining quota, tick at most as many networks as a VM may have NICs, and
// warn when user-data is given for an image without cloud-init.
(function () {
  "use strict";
  var form = document.querySelector("[data-create-form]");
  if (!form) return;

  // Mirrors vms.validation.NAME_RE and validate_vm_name's messages.
  var NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  var nameInput = form.querySelector("[data-name-input]");
  var nameError = document.getElementById("name-error");
  var help = nameInput ? nameInput.dataset.help : "";
  var touched = false;

  function nameProblem(raw) {
    var value = raw.trim();
    if (!value) return "Name is required.";
    if (value.length > 63) return "Name is too long (" + value.length + " characters, at most 63).";
    if (!NAME_RE.test(value)) {
      var hint = "";
      if (/[A-Z]/.test(value)) hint = " Use lowercase letters.";
      else if (/[<>&"'\s]/.test(value)) hint = " Spaces and characters like < > & \" ' are not allowed.";
      else if (/^-|-$/.test(value)) hint = " It cannot start or end with a hyphen.";
      return "Invalid name '" + value.slice(0, 70) + "': use " + help + "." + hint;
    }
    return "";
  }

  function showNameError(message) {
    if (!nameError) return;
    nameError.innerHTML = "";
    if (message) {
      var span = document.createElement("span");
      span.textContent = message;
      nameError.appendChild(span);
    }
    nameError.hidden = !message;
    nameInput.setAttribute("aria-invalid", message ? "true" : "false");
    nameInput.closest(".field").classList.toggle("has-error", !!message);
  }

  if (nameInput) {
    // JavaScript shows its own messages next to the field instead of the browser's bubbles.
    form.noValidate = true;
    nameInput.addEventListener("input", function () {
      if (!touched && !nameInput.value) return;
      touched = true;
      showNameError(nameProblem(nameInput.value));
    });
    nameInput.addEventListener("blur", function () {
      if (nameInput.value) { touched = true; showNameError(nameProblem(nameInput.value)); }
    });
  }

  form.addEventListener("submit", function (event) {
    var problem = nameInput ? nameProblem(nameInput.value) : "";
    if (problem) {
      event.preventDefault();
      showNameError(problem);
      nameInput.focus();
      return;
    }
    var submit = form.querySelector("button[type=submit]");
    if (submit) { submit.disabled = true; submit.textContent = "Creating…"; }
  });

  // --- Size: presets or custom ------------------------------------------------------------------
  var custom = form.querySelector("[data-custom-size]");
  var check = document.querySelector("[data-quota-check]");
  var remaining = {};
  document.querySelectorAll("[data-remaining]").forEach(function (row) {
    remaining[row.dataset.remaining] = parseInt(row.dataset.value, 10);
  });

  function selectedSize() {
    var radio = form.querySelector("input[name=flavor]:checked");
    if (!radio) return null;
    if (radio.value === "custom") {
      return {
        vcpus: parseInt(form.elements.vcpus.value, 10),
        memory_mib: parseInt(form.elements.memory_mib.value, 10),
        disk_gib: parseInt(form.elements.disk_gib.value, 10),
        custom: true
      };
    }
    return {
      vcpus: parseInt(radio.dataset.vcpus, 10),
      memory_mib: parseInt(radio.dataset.memory, 10),
      disk_gib: parseInt(radio.dataset.disk, 10)
    };
  }

  // With teams, the VM's owner decides whose quota it uses: the numbers and the check follow it.
  var owner = form.querySelector("[data-owner-select]");
  var byOwner = null;
  var byOwnerNode = document.getElementById("quota-by-owner");
  if (byOwnerNode) {
    try { byOwner = JSON.parse(byOwnerNode.textContent); } catch (e) { byOwner = null; }
  }
  var whose = "your";

  function applyOwner() {
    if (!owner || !byOwner) return;
    var team = owner.value;
    var q = byOwner[team];
    if (!q) return;
    whose = team ? "team " + team + "'s" : "your";
    document.querySelectorAll("[data-owner-label]").forEach(function (el) {
      el.textContent = team ? " (team " + team + ")" : "";
    });
    document.querySelectorAll("[data-remaining]").forEach(function (row) {
      var r = q[row.dataset.remaining];
      if (!r) return;
      remaining[row.dataset.remaining] = r.remaining;
      row.dataset.value = r.remaining;
      row.classList.toggle("is-full", r.remaining === 0);
      var left = row.querySelector("[data-remaining-left]");
      var limit = row.querySelector("[data-remaining-limit]");
      if (left) left.textContent = r.left;
      if (limit) limit.textContent = r.limit;
    });
  }

  function markFlavors() {
    form.querySelectorAll("input[name=flavor][data-vcpus]").forEach(function (radio) {
      var fits = (remaining.vms === undefined || remaining.vms >= 1) &&
        parseInt(radio.dataset.vcpus, 10) <= remaining.vcpus &&
        parseInt(radio.dataset.memory, 10) <= remaining.memory_mib &&
        parseInt(radio.dataset.disk, 10) <= remaining.disk_gib;
      var choice = radio.closest(".choice");
      if (choice) choice.classList.toggle("is-over", !fits);
    });
  }

  function update() {
    applyOwner();
    if (byOwner) markFlavors();
    var size = selectedSize();
    if (custom) custom.classList.toggle("is-collapsed", !(size && size.custom));
    if (!check) return;
    if (!size || isNaN(size.vcpus) || isNaN(size.memory_mib) || isNaN(size.disk_gib)) {
      check.textContent = "";
      check.className = "quota-check";
      return;
    }
    var over = [];
    if (remaining.vms !== undefined && remaining.vms < 1) over.push("VMs");
    if (size.vcpus > remaining.vcpus) over.push("vCPUs");
    if (size.memory_mib > remaining.memory_mib) over.push("memory");
    if (size.disk_gib > remaining.disk_gib) over.push("disk");
    if (over.length) {
      check.textContent = "This size needs more " + over.join(", ") + " than " + whose + " quota has left.";
      check.className = "quota-check is-over";
    } else {
      check.textContent = "✓ This size fits " + whose + " remaining quota.";
      check.className = "quota-check is-ok";
    }
  }

  // --- Networks: at most data-max ticked (one NIC each) ------------------------------------------
  var nets = form.querySelector("[data-networks]");
  function limitNetworks() {
    if (!nets) return;
    var max = parseInt(nets.dataset.max, 10);
    var boxes = Array.prototype.slice.call(nets.querySelectorAll("input[name=networks]"));
    var ticked = boxes.filter(function (b) { return b.checked; }).length;
    boxes.forEach(function (b) { if (!b.checked) b.disabled = !isNaN(max) && ticked >= max; });
  }

  // --- User-data: only images that take cloud-init use it ---------------------------------------
  var userData = form.querySelector("#id_user_data");
  var userDataWarn = form.querySelector("[data-user-data-warn]");
  function checkUserData() {
    if (!userData || !userDataWarn) return;
    var image = form.querySelector("input[name=image]:checked");
    userDataWarn.hidden = !(userData.value.trim() && image && !image.hasAttribute("data-cloud-init"));
  }

  // --- Thin clone or full copy: only for templates ------------------------------------------------
  var cloneChoice = form.querySelector("[data-clone-choice]");
  function showClone() {
    if (!cloneChoice) return;
    var image = form.querySelector("input[name=image]:checked");
    cloneChoice.hidden = !(image && image.hasAttribute("data-template"));
    if (cloneChoice.hidden) {  // other images: today's thin overlay, whatever was ticked for a template
      var thin = cloneChoice.querySelector("input[value=thin]");
      if (thin) thin.checked = true;
    }
  }

  form.addEventListener("change", function () { update(); limitNetworks(); checkUserData(); showClone(); });
  form.addEventListener("input", function (e) {
    if (e.target.type === "number") update();
    if (e.target === userData) checkUserData();
  });
  update();
  limitNetworks();
  checkUserData();
  showClone();
})();
