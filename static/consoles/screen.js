// The VM's screen: noVNC over a websocket opened with a fresh one-time ticket.
import RFB from "../vendor/novnc/core/rfb.js";
import { Reconnector, StatusLine, bindFullscreen, closeText, fetchTicket, socketURL } from "./common.js";

const root = document.querySelector("[data-console-screen]");
const screen = root.querySelector("[data-screen]");
const status = new StatusLine(root);
const viewOnly = root.dataset.viewOnly === "1";
const scale = root.querySelector("[data-scale]");
const cad = root.querySelector("[data-action=cad]");
const pasteForm = root.querySelector("[data-paste]");
const pasteSend = root.querySelector("[data-paste-send]");

// Exposed for people debugging in the devtools and for the browser tests.
const state = (window.portalConsole = { state: "connecting", lastClose: null, rfb: null, tier: null });
let rfb = null;
const reconnector = new Reconnector(root, connect, status);

function setControls(enabled) {
  if (cad) cad.disabled = !enabled;
  if (pasteSend) pasteSend.disabled = !enabled;
}

async function connect() {
  setControls(false);
  state.state = "connecting";
  status.set("connecting", "Getting a console ticket…");
  let ticket;
  try {
    ticket = await fetchTicket(root, "screen");
  } catch (err) {
    state.state = "closed";
    reconnector.closed(null, err.message);
    return;
  }
  state.tier = ticket.tier;
  status.set("connecting", ticket.tier === "websockify" ? "Connecting through the console proxy…" : "Connecting…");
  let lastClose = null;
  const ws = new WebSocket(socketURL(ticket.url), ["binary"]);
  ws.binaryType = "arraybuffer";
  ws.addEventListener("close", (event) => { lastClose = event; state.lastClose = { code: event.code, reason: event.reason }; });
  screen.replaceChildren();
  rfb = new RFB(screen, ws, { shared: true });
  state.rfb = rfb;
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = scale.checked;
  rfb.resizeSession = false;
  rfb.focusOnClick = !viewOnly;
  rfb.background = "#0d1117";
  rfb.addEventListener("connect", () => {
    state.state = "connected";
    reconnector.connected();
    setControls(!viewOnly);
    const via = ticket.tier === "websockify" ? " through the console proxy" : "";
    status.set("connected", `Connected${via}${viewOnly ? " · view-only" : ""}.`);
    if (!viewOnly) rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    state.state = "closed";
    setControls(false);
    reconnector.closed(lastClose, closeText(lastClose));
  });
  rfb.addEventListener("securityfailure", (event) => {
    status.set("closed", `The VM's display refused the connection: ${event.detail.reason || event.detail.status}`);
  });
}

scale.addEventListener("change", () => { if (rfb) rfb.scaleViewport = scale.checked; });
if (cad) cad.addEventListener("click", () => { rfb?.sendCtrlAltDel(); rfb?.focus(); });
bindFullscreen(root, screen);

// Typing text (US layout keysyms); characters that need Shift get it pressed around them.
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?'.split(""));
const XK_SHIFT_L = 0xffe1;
function keysymFor(ch) {
  if (ch === "\n" || ch === "\r") return 0xff0d;
  if (ch === "\t") return 0xff09;
  const cp = ch.codePointAt(0);
  return cp < 0x100 ? cp : 0x01000000 + cp;
}
if (pasteForm) {
  pasteForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const field = pasteForm.querySelector("[data-paste-text]");
    if (!rfb || state.state !== "connected" || !field.value) return;
    rfb.clipboardPasteFrom(field.value);  // for guests with a clipboard agent
    for (const ch of field.value.replace(/\r\n/g, "\n")) {
      const shift = SHIFTED.has(ch) || (ch >= "A" && ch <= "Z");
      if (shift) rfb.sendKey(XK_SHIFT_L, "ShiftLeft", true);
      rfb.sendKey(keysymFor(ch), null);
      if (shift) rfb.sendKey(XK_SHIFT_L, "ShiftLeft", false);
    }
    field.value = "";
    rfb.focus();
  });
}

document.querySelectorAll("[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const field = document.querySelector(button.dataset.copy);
    field.select();
    try { await navigator.clipboard.writeText(field.value); button.textContent = "Copied"; }
    catch (err) { document.execCommand("copy"); button.textContent = "Copied"; }
  });
});

window.addEventListener("beforeunload", () => { rfb?.disconnect(); });
connect();
