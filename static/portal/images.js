// The image library's add forms: a resumable upload with tus-js-client (static/vendor/tus), or an
// import from a URL; both then POST /api/images/import/ and follow the import job in place (live.js
// paints its progress from the websocket and dispatches "portal:job", which ends the story here).
//
// Upload: chunks of data-chunk-bytes, each a tus PATCH; a dropped chunk is sent again after a HEAD
// tells where the server stopped (retryDelays), and the URL of an unfinished upload is remembered in
// localStorage (tus-js-client's fingerprint store), so choosing the same file after a reload carries
// on where it stopped instead of starting again. Cancel aborts and DELETEs the upload on the server.
// Errors from the API ({"code", "detail", "errors": {field: [messages]}}) are shown in the form.
(function () {
  "use strict";
  var uploadForm = document.querySelector("[data-upload-form]");
  var urlForm = document.querySelector("[data-url-form]");
  if (!uploadForm && !urlForm) return;

  var NAME_RE = /^[a-z0-9][a-z0-9-]{0,58}[a-z0-9]$/;
  var TERMINAL = ["succeeded", "failed", "errored", "cancelled"];
  var FIELD_ALIASES = { upload: "file", source: "file", filename: "file", format: "file", metadata: "file",
                        length: "file", path: "url" };

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function filesize(bytes) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var size = bytes, i = 0;
    while (size >= 1024 && i < units.length - 1) { size /= 1024; i += 1; }
    if (i === 0) return Math.round(size) + " B";
    return size.toFixed(1).replace(/\.0$/, "") + " " + units[i];
  }

  function slugFrom(text) {
    var base = String(text || "").split(/[?#]/)[0].split("/").pop() || "";
    base = base.replace(/\.(qcow2|img|raw|vmdk|vdi|vhdx|iso|ova|gz|xz|bz2|zst)$/gi, "")
               .replace(/\.(qcow2|img|raw|vmdk|vdi|vhdx|iso|ova)$/gi, "");
    return base.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60).replace(/-+$/, "");
  }

  // --- errors in the form -----------------------------------------------------------------------
  function clearErrors(form) {
    form.querySelectorAll("[data-field-error]").forEach(function (el) { el.hidden = true; el.innerHTML = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".has-error").forEach(function (el) { el.classList.remove("has-error"); });
    var top = form.querySelector("[data-form-error]");
    top.hidden = true;
    top.textContent = "";
  }

  function fieldError(form, field, messages) {
    var slot = form.querySelector('[data-field-error="' + field + '"]');
    if (!slot) return false;
    messages.forEach(function (m) {
      var span = document.createElement("span");
      span.textContent = m;
      slot.appendChild(span);
    });
    slot.hidden = false;
    var holder = slot.closest(".field, .fieldset");
    if (holder) holder.classList.add("has-error");
    var input = form.querySelector('[name="' + field + '"]');
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }

  function formError(form, message) {
    var top = form.querySelector("[data-form-error]");
    top.textContent = top.hidden || !top.textContent ? message : top.textContent + " " + message;
    top.hidden = false;
  }

  // An API error body shown in the form: each field's messages next to it, the rest on top.
  function showApiError(form, status, body) {
    var shown = false;
    var errors = body && typeof body.errors === "object" ? body.errors : null;
    if (errors) {
      Object.keys(errors).forEach(function (key) {
        var list = Array.isArray(errors[key]) ? errors[key] : [String(errors[key])];
        list = list.map(function (m) { return typeof m === "string" ? m : JSON.stringify(m); });
        // Next to its field when the form has it; otherwise (non_field_errors, __all__, …) on top.
        if (!fieldError(form, FIELD_ALIASES[key] || key, list)) formError(form, list.join(" "));
        shown = true;
      });
    }
    if (!shown) {
      var detail = body && body.detail ? body.detail
        : status === 0 ? "The portal could not be reached. Check your connection and try again."
        : "The portal refused the request (HTTP " + status + ").";
      formError(form, detail);
    }
    var first = form.querySelector("[aria-invalid=true]");
    if (first) first.focus();
  }

  function localProblems(form, fields) {
    var ok = true;
    var name = form.querySelector("[name=name]").value.trim();
    if (!NAME_RE.test(name)) {
      fieldError(form, "name", [name ? "Image name must be 2–60 lowercase letters, digits or hyphens." : "Name is required."]);
      ok = false;
    }
    var sha = form.querySelector("[name=sha256]").value.trim();
    if (sha && !/^[0-9a-fA-F]{64}$/.test(sha)) {
      fieldError(form, "sha256", ["A SHA-256 is 64 hexadecimal digits."]);
      ok = false;
    }
    (fields || []).forEach(function (check) { if (!check()) ok = false; });
    if (!ok) {
      var first = form.querySelector("[aria-invalid=true]");
      if (first) first.focus();
    }
    return ok;
  }

  function importBody(form, extra) {
    var body = {
      name: form.querySelector("[name=name]").value.trim(),
      visibility: form.querySelector("[name=visibility]").value
    };
    var title = form.querySelector("[name=title]").value.trim();
    if (title) body.title = title;
    var sha = form.querySelector("[name=sha256]").value.trim().toLowerCase();
    if (sha) body.sha256 = sha;
    if (body.visibility === "group") {
      body.groups = Array.prototype.map.call(form.querySelectorAll("[name=groups]:checked"), function (c) { return c.value; });
    }
    Object.keys(extra).forEach(function (k) { body[k] = extra[k]; });
    return body;
  }

  // --- the import job -------------------------------------------------------------------------------
  function postImport(form, body) {
    return fetch(form.dataset.importUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (data) { return { status: r.status, data: data }; });
    }, function () { return { status: 0, data: null }; });
  }

  function refreshTable() {
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("[data-images-region]");
        var current = document.querySelector("[data-images-region]");
        if (fresh && current) current.parentNode.replaceChild(fresh, current);
      })
      .catch(function () {});
  }

  function followJob(form, job, onEnd) {
    var slot = form.querySelector("[data-import-job]");
    var template = document.getElementById("import-job-template");
    var box = template.content.firstElementChild.cloneNode(true);
    box.dataset.jobId = job.id;
    box.querySelector("[data-job-link]").href = "/jobs/" + job.id + "/";
    slot.innerHTML = "";
    slot.appendChild(box);
    slot.hidden = false;
    var ended = false;

    function end(ev) {
      if (ended) return;
      ended = true;
      document.removeEventListener("portal:job", listener);
      var done = box.querySelector("[data-import-done]");
      if (ev.status === "succeeded") {
        fetch("/api/jobs/" + job.id + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) {
            var result = (data && data.result) || {};
            var id = result.image_id || (data && data.target_type === "image" ? data.target_id : null);
            var name = result.image || result.name || (data && data.target_name) || "the image";
            done.textContent = "Imported ";
            if (id) {
              var link = document.createElement("a");
              link.href = "/images/" + id + "/";
              link.textContent = name;
              done.appendChild(link);
            } else {
              done.appendChild(document.createTextNode(name));
            }
            done.appendChild(document.createTextNode("."));
            done.hidden = false;
          })
          .catch(function () {});
        refreshTable();
      }
      onEnd(ev);
    }

    function listener(e) {
      var ev = e.detail;
      if (ev && ev.id === String(job.id) && TERMINAL.indexOf(ev.status) !== -1) end(ev);
    }
    document.addEventListener("portal:job", listener);
    if (window.PortalLive && window.PortalLive.poll) window.PortalLive.poll();
  }

  function startImport(form, body, button, onEnd) {
    button.disabled = true;
    return postImport(form, body).then(function (res) {
      if (res.status !== 202 && res.status !== 201 && res.status !== 200) {
        showApiError(form, res.status, res.data);
        button.disabled = false;
        onEnd({ status: "refused" });
        return;
      }
      var job = (res.data && res.data.job) || res.data || {};
      followJob(form, job, function (ev) { button.disabled = false; onEnd(ev); });
    });
  }

  // --- shared behaviour: groups shown for "Its groups", names suggested --------------------------
  document.querySelectorAll("[data-visibility]").forEach(function (select) {
    var groups = select.closest("form").querySelector("[data-groups]");
    if (!groups) return;
    function sync() { groups.hidden = select.value !== "group"; }
    select.addEventListener("change", sync);
    sync();
  });

  function suggestName(form, source) {
    var name = form.querySelector("[name=name]");
    if (name.value && name.dataset.suggested !== name.value) return;
    var slug = slugFrom(source);
    if (slug.length >= 2) { name.value = slug; name.dataset.suggested = slug; }
  }

  // --- upload -------------------------------------------------------------------------------------------
  if (uploadForm) {
    var fileInput = uploadForm.querySelector("[name=file]");
    var startBtn = uploadForm.querySelector("[data-upload-start]");
    var cancelBtn = uploadForm.querySelector("[data-upload-cancel]");
    var progress = uploadForm.querySelector("[data-upload-progress]");
    var bar = uploadForm.querySelector("[data-upload-bar]");
    var percent = uploadForm.querySelector("[data-upload-percent]");
    var statusText = uploadForm.querySelector("[data-upload-status]");
    var current = null;       // the tus.Upload under way
    var finished = null;      // {file, id}: uploaded, waiting for an import that was refused
    var speed = { bytes: 0, time: 0, rate: 0 };

    fileInput.addEventListener("change", function () {
      if (fileInput.files.length) suggestName(uploadForm, fileInput.files[0].name);
    });

    function setBusy(busy) {
      startBtn.disabled = busy;
      cancelBtn.hidden = !busy;
      fileInput.disabled = busy;
    }

    function paint(sent, total) {
      var pct = total ? Math.floor(sent * 100 / total) : 0;
      var now = Date.now();
      if (!speed.time) { speed.time = now; speed.bytes = sent; }
      else if (now - speed.time >= 700) {
        speed.rate = (sent - speed.bytes) * 1000 / (now - speed.time);
        speed.time = now;
        speed.bytes = sent;
      }
      bar.setAttribute("aria-valuenow", String(pct));
      bar.querySelector(".progress-bar").style.width = pct + "%";
      percent.textContent = pct + "%";
      statusText.textContent = filesize(sent) + " of " + filesize(total) +
        (speed.rate > 0 && sent < total ? " · " + filesize(speed.rate) + "/s" : "");
    }

    function uploadId(url) {
      var match = String(url || "").match(/([0-9a-fA-F-]{36})\/?$/);
      return match ? match[1] : "";
    }

    function doImport(file, id) {
      statusText.textContent = filesize(file.size) + " uploaded. Starting the import…";
      startImport(uploadForm, importBody(uploadForm, { source: "upload", upload: id }), startBtn, function (ev) {
        if (ev.status === "refused") {
          finished = { file: file, id: id };  // fix the form and try again: the bytes stay on the server
          statusText.textContent = filesize(file.size) + " uploaded; the import was refused (see above). " +
            "Correct the form and submit again: the file is not sent twice.";
          return;
        }
        finished = null;
        if (ev.status === "succeeded") {
          uploadForm.reset();
          fileInput.dispatchEvent(new Event("change"));
          progress.hidden = true;
        }
      });
    }

    uploadForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (current) return;
      clearErrors(uploadForm);
      var file = fileInput.files[0];
      var maxBytes = parseInt(uploadForm.dataset.maxBytes, 10);
      var ok = localProblems(uploadForm, [function () {
        if (!file) return fieldError(uploadForm, "file", ["Choose a file to upload."]) && false;
        if (maxBytes && file.size > maxBytes) {
          return fieldError(uploadForm, "file", ["The file is " + filesize(file.size) + "; at most " + filesize(maxBytes) + " is accepted."]) && false;
        }
        if (!file.size) return fieldError(uploadForm, "file", ["The file is empty."]) && false;
        return true;
      }]);
      if (!ok) return;
      if (finished && finished.file === file) { doImport(file, finished.id); return; }
      if (typeof window.tus === "undefined" || !window.tus.isSupported) {
        formError(uploadForm, "This browser cannot upload files in chunks; use the REST API instead.");
        return;
      }
      var chunk = parseInt(uploadForm.dataset.chunkBytes, 10) || 8 * 1024 * 1024;
      speed = { bytes: 0, time: 0, rate: 0 };
      progress.hidden = false;
      uploadForm.querySelector("[data-import-job]").hidden = true;
      paint(0, file.size);
      statusText.textContent = "Starting the upload…";
      setBusy(true);
      var upload = new window.tus.Upload(file, {
        endpoint: uploadForm.dataset.endpoint,
        chunkSize: chunk,
        retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        headers: { "X-CSRFToken": csrfToken() },
        metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
        onProgress: paint,
        onSuccess: function () {
          current = null;
          setBusy(false);
          startBtn.disabled = true;
          paint(file.size, file.size);
          doImport(file, uploadId(upload.url));
        },
        onError: function (error) {
          current = null;
          setBusy(false);
          var response = error && error.originalResponse;
          var status = response ? response.getStatus() : 0;
          var body = null;
          try { body = response ? JSON.parse(response.getBody()) : null; } catch (e) { body = null; }
          statusText.textContent = "The upload stopped.";
          showApiError(uploadForm, status, body || { detail: status ? null : "The upload stopped: the portal could not be reached. Submit again to carry on where it stopped." });
        }
      });
      current = upload;
      upload.findPreviousUploads().then(function (previous) {
        if (current !== upload) return;
        if (previous.length) {
          upload.resumeFromPreviousUpload(previous[0]);
          statusText.textContent = "Resuming an earlier upload of this file…";
        }
        upload.start();
      });
    });

    cancelBtn.addEventListener("click", function () {
      var upload = current;
      if (!upload) return;
      current = null;
      cancelBtn.disabled = true;
      statusText.textContent = "Cancelling…";
      upload.abort(true).then(function () {
        statusText.textContent = "Upload cancelled; nothing was kept.";
      }, function () {
        statusText.textContent = "Upload stopped; the portal removes what it received when the upload expires.";
      }).then(function () {
        cancelBtn.disabled = false;
        setBusy(false);
        bar.querySelector(".progress-bar").style.width = "0%";
        bar.setAttribute("aria-valuenow", "0");
        percent.textContent = "0%";
      });
    });
  }

  // --- import from a URL ------------------------------------------------------------------------------
  if (urlForm) {
    var urlInput = urlForm.querySelector("[name=url]");
    var urlButton = urlForm.querySelector("button[type=submit]");
    urlInput.addEventListener("input", function () { suggestName(urlForm, urlInput.value); });
    urlForm.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(urlForm);
      var ok = localProblems(urlForm, [function () {
        var value = urlInput.value.trim();
        if (!/^https?:\/\/\S+$/i.test(value)) {
          fieldError(urlForm, "url", [value ? "Give an http:// or https:// URL." : "URL is required."]);
          return false;
        }
        return true;
      }]);
      if (!ok) return;
      startImport(urlForm, importBody(urlForm, { source: "url", url: urlInput.value.trim() }), urlButton, function (ev) {
        if (ev.status === "succeeded") urlForm.reset();
      });
    });
  }
})();
