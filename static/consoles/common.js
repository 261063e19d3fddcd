// Shared by the screen (noVNC) and terminal (xterm.js) pages: tickets, socket URLs, status line.

// Close codes of consoles/exceptions.py, as a person reads them when the server sent no reason.
const CLOSE_TEXT = {
  1000: "Closed.",
  1001: "The server went away.",
  1006: "The connection dropped.",
  1011: "The console relay failed.",
  4000: "The console session ended.",
  4400: "The console received something it does not understand.",
  4401: "No valid console ticket.",
  4403: "You may not use this console.",
  4408: "The console ticket expired.",
  4409: "The console ticket was already used.",
  4410: "The VM is not running.",
  4423: "Someone else is using this terminal.",
  4429: "Too many consoles open: close one to open another.",
  4502: "The console is unavailable: the VM's host did not answer.",
};

// Drops worth retrying on their own: the network or the relay, not a refusal.
const RETRY_CODES = new Set([1001, 1006, 1011, 4502]);

export function closeText(event) {
  if (!event) return "The connection closed.";
  const text = event.reason || CLOSE_TEXT[event.code] || "The connection closed.";
  return event.code ? `${text} (code ${event.code})` : text;
}

export function shouldRetry(event) {
  return !!event && RETRY_CODES.has(event.code);
}

export function socketURL(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${url}`;
}

export async function fetchTicket(root, kind) {
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
  const body = new URLSearchParams({ kind });
  const tier = new URLSearchParams(window.location.search).get("tier");
  if (tier) body.set("tier", tier);
  let response;
  try {
    response = await fetch(root.dataset.ticketUrl, {
      method: "POST",
      body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
  } catch (err) {
    throw new Error("The portal cannot be reached.");
  }
  let data = {};
  try { data = await response.json(); } catch (err) { /* a login page or proxy error */ }
  if (!response.ok) {
    const error = new Error(data.detail || `The portal refused the console (HTTP ${response.status}).`);
    error.code = data.code;
    error.status = response.status;
    throw error;
  }
  return data;
}

export class StatusLine {
  constructor(root) {
    this.el = root.querySelector("[data-status]");
    this.text = root.querySelector("[data-status-text]");
  }
  set(state, text) {
    this.el.dataset.state = state;
    this.text.textContent = text;
  }
}

export function bindFullscreen(root, target) {
  const button = root.querySelector("[data-action=fullscreen]");
  if (!button) return;
  if (!document.fullscreenEnabled) { button.hidden = true; return; }
  button.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else target.requestFullscreen().catch(() => {});
  });
  document.addEventListener("fullscreenchange", () => {
    button.textContent = document.fullscreenElement ? "Exit fullscreen" : "Fullscreen";
  });
}

// Reconnect with backoff after a drop; the caller decides what a drop is.
export class Reconnector {
  constructor(root, connect, status) {
    this.button = root.querySelector("[data-action=reconnect]");
    this.connect = connect;
    this.status = status;
    this.attempt = 0;
    this.timer = null;
    this.button.addEventListener("click", () => { this.attempt = 0; this.now(); });
  }
  connected() { this.attempt = 0; this.button.hidden = true; }
  now() {
    clearTimeout(this.timer);
    this.button.hidden = true;
    this.connect();
  }
  closed(event, text) {
    this.button.hidden = false;
    if (shouldRetry(event) && this.attempt < 5) {
      const delay = Math.min(8, 2 ** this.attempt);
      this.attempt += 1;
      this.status.set("reconnecting", `${text} Reconnecting in ${delay} s…`);
      this.timer = setTimeout(() => this.now(), delay * 1000);
    } else {
      this.status.set("closed", text);
    }
  }
}
