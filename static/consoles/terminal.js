// The VM's serial console: xterm.js over a websocket opened with a fresh one-time ticket.
// Binary frames carry terminal bytes both ways; text frames carry JSON control messages.
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";
import { Reconnector, StatusLine, bindFullscreen, closeText, fetchTicket, socketURL } from "./common.js";

const root = document.querySelector("[data-console-terminal]");
const holder = root.querySelector("[data-terminal]");
const status = new StatusLine(root);
const sttyButton = root.querySelector("[data-action=stty]");
const encoder = new TextEncoder();

const term = new Terminal({
  cursorBlink: true,
  scrollback: 5000,
  fontFamily: 'ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace',
  fontSize: 14,
  theme: { background: "#0d1117", foreground: "#e6edf3" },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(holder);
fit.fit();

const state = (window.portalTerminal = { term, state: "connecting", lastClose: null, readOnly: false });
let ws = null;
const reconnector = new Reconnector(root, connect, status);

function send(data) {
  if (ws && ws.readyState === WebSocket.OPEN && !state.readOnly) ws.send(data);
}

async function connect() {
  sttyButton.disabled = true;
  state.state = "connecting";
  status.set("connecting", "Getting a console ticket…");
  let ticket;
  try {
    ticket = await fetchTicket(root, "serial");
  } catch (err) {
    state.state = "closed";
    reconnector.closed(null, err.message);
    return;
  }
  status.set("connecting", "Connecting…");
  const socket = (ws = new WebSocket(socketURL(ticket.url)));
  socket.binaryType = "arraybuffer";
  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    let message;
    try { message = JSON.parse(event.data); } catch (err) { return; }
    if (message.type === "status") {
      state.state = "connected";
      state.readOnly = !!message.read_only;
      term.options.disableStdin = state.readOnly;
      reconnector.connected();
      sttyButton.disabled = state.readOnly;
      status.set(state.readOnly ? "readonly" : "connected", message.message);
      socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
      if (!state.readOnly) { term.focus(); socket.send(encoder.encode("\r")); }
    }
  });
  socket.addEventListener("close", (event) => {
    if (ws !== socket) return;
    state.state = "closed";
    state.lastClose = { code: event.code, reason: event.reason };
    sttyButton.disabled = true;
    reconnector.closed(event, closeText(event));
  });
}

term.onData((data) => send(encoder.encode(data)));
term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
term.onResize(({ cols, rows }) => {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
});
new ResizeObserver(() => fit.fit()).observe(holder);
sttyButton.addEventListener("click", () => {
  send(encoder.encode(`stty cols ${term.cols} rows ${term.rows}\r`));
  term.focus();
});
bindFullscreen(root, holder);
window.addEventListener("beforeunload", () => ws?.close(1000));
connect();
