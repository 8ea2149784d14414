// Parley web chat: one WebSocket session per page, JSON frames (the protobuf
// JSON mapping of parley.v1.ConnectRequest/ConnectResponse; see
// services/gateway/websocket.py for the endpoint, encodings and close codes).
//
// Development shortcuts in the page URL:
//   ?as=USER&token=JWT      fill the form and connect right away
//   &conversation=ID        the conversation the send box targets
//   &send=TEXT              send TEXT once, after the first sync (test automation)
"use strict";

const ACK_DELAY_MS = 200;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;
const CLOSE_UNAUTHENTICATED = 4001;

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), login: $("login"), user: $("user"), token: $("token"),
  disconnect: $("disconnect"), messages: $("messages"), compose: $("compose"),
  conversation: $("conversation"), text: $("text"),
};

// The current connection's state; null when disconnected on purpose.
let chat = null;

// --- small helpers ---------------------------------------------------------------------

function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function fromBase64(data) {
  return new TextDecoder().decode(Uint8Array.from(atob(data || ""), (c) => c.charCodeAt(0)));
}

function tokenSubject(token) {
  // Display only: the gateway verifies the token.
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || "";
  } catch {
    return "";
  }
}

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

// Cursors ("I have everything up to seq", per conversation) and the device id live in
// localStorage per user, so a reload or reconnect resumes where the page left off.
const storageKey = (user, what) => `parley:${user}:${what}`;

function loadCursors(user) {
  try {
    return JSON.parse(localStorage.getItem(storageKey(user, "cursors")) || "{}");
  } catch {
    return {};
  }
}

function deviceId(user) {
  const key = storageKey(user, "device");
  let id = localStorage.getItem(key);
  if (!id) {
    id = `web-${randomId().slice(0, 12)}`;
    localStorage.setItem(key, id);
  }
  return id;
}

// --- rendering -----------------------------------------------------------------------

function addItem(className, meta, text, data = {}) {
  const li = document.createElement("li");
  li.className = className;
  Object.assign(li.dataset, data);
  const metaEl = document.createElement("span");
  metaEl.className = "meta";
  metaEl.textContent = meta;
  const bodyEl = document.createElement("span");
  bodyEl.className = "body";
  bodyEl.textContent = text;
  li.append(metaEl, bodyEl);
  ui.messages.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function showMessage(m, mine) {
  const seq = Number(m.seq);
  const when = m.server_time ? new Date(m.server_time).toLocaleTimeString() : "";
  const sender = mine ? `${m.sender_id} (me)` : m.sender_id;
  addItem(mine ? "message mine" : "message", `${m.conversation_id} · #${seq} · ${sender} · ${when}`, m.text, {
    conversation: m.conversation_id, seq: String(seq), sender: m.sender_id,
  });
}

function showSystem(text, isError = false) {
  addItem(isError ? "system error" : "system", "", text);
}

// --- the session ---------------------------------------------------------------------

function connect(user, token) {
  disconnect();
  chat = {
    user, token, ws: null, attempt: 0, timers: new Set(), ackTimer: null,
    cursors: loadCursors(user), acked: {}, read: {},
    pending: new Map(), // client_message_id -> {conversation_id, text}: sent until acked
    autoSendDone: false,
  };
  ui.disconnect.disabled = false;
  open(chat);
}

function disconnect() {
  if (!chat) return;
  const old = chat;
  chat = null;
  old.timers.forEach(clearTimeout);
  if (old.ws) old.ws.close(1000, "bye");
  ui.disconnect.disabled = true;
  setStatus("not connected", "idle");
}

function later(c, fn, ms) {
  const id = setTimeout(() => { c.timers.delete(id); fn(); }, ms);
  c.timers.add(id);
  return id;
}

function open(c) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol.
  const ws = new WebSocket(`${scheme}://${location.host}/v1/connect`, ["parley.v1", `bearer.${c.token}`]);
  c.ws = ws;
  setStatus(c.attempt ? `reconnecting (attempt ${c.attempt + 1})…` : "connecting…", "connecting");
  ws.onopen = () => {
    const cursors = Object.entries(c.cursors).map(([conversation_id, seq]) => ({ conversation_id, seq }));
    transmit(c, { hello: { device_id: deviceId(c.user), sync: { cursors } } });
  };
  ws.onmessage = (event) => {
    if (chat !== c || c.ws !== ws) return;
    try {
      onFrame(c, JSON.parse(event.data));
    } catch (err) {
      showSystem(`bad frame from the server: ${err}`, true);
    }
  };
  ws.onclose = (event) => {
    if (chat !== c || c.ws !== ws) return; // closed on purpose, or a newer socket took over
    c.ws = null;
    c.timers.forEach(clearTimeout);
    c.timers.clear();
    c.ackTimer = null;
    if (event.code === CLOSE_UNAUTHENTICATED) {
      setStatus(`rejected: ${event.reason || "unauthenticated"}`, "error");
      chat = null;
      ui.disconnect.disabled = true;
      return;
    }
    // A refused upgrade (bad token, gateway down) shows up as 1006 without a reason.
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** c.attempt) * (0.5 + Math.random() / 2);
    c.attempt += 1;
    setStatus(`disconnected (${event.code}${event.reason ? `: ${event.reason}` : ""}); retrying in ${(delay / 1000).toFixed(1)} s`, "error");
    later(c, () => open(c), delay);
  };
}

function transmit(c, frame) {
  if (c.ws && c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(frame));
}

function sendText(c, conversationId, text) {
  const id = randomId();
  c.pending.set(id, { conversation_id: conversationId, text });
  transmitSend(c, id);
}

function transmitSend(c, id) {
  const p = c.pending.get(id);
  // The client_message_id makes a resend after a reconnect idempotent.
  transmit(c, { request_id: id, send: { conversation_id: p.conversation_id, client_message_id: id, body: toBase64(p.text) } });
}

function advance(c, conversationId, seq) {
  if (seq > (c.cursors[conversationId] || 0)) {
    c.cursors[conversationId] = seq;
    localStorage.setItem(storageKey(c.user, "cursors"), JSON.stringify(c.cursors));
  }
}

function scheduleAck(c) {
  if (c.ackTimer) return;
  c.ackTimer = later(c, () => {
    c.ackTimer = null;
    const visible = document.visibilityState === "visible";
    for (const [conversation_id, seq] of Object.entries(c.cursors)) {
      // Cumulative: one frame per conversation covers every message up to seq.
      if (seq > (c.acked[conversation_id] || 0)) {
        transmit(c, { ack: { conversation_id, seq } });
        c.acked[conversation_id] = seq;
      }
      if (visible && seq > (c.read[conversation_id] || 0)) {
        transmit(c, { read: { conversation_id, seq } });
        c.read[conversation_id] = seq;
      }
    }
  }, ACK_DELAY_MS);
}

function heartbeat(c, intervalS) {
  later(c, () => {
    transmit(c, { ping: { nonce: String(Date.now()) } });
    heartbeat(c, intervalS);
  }, (intervalS * 1000) / 2);
}

function onFrame(c, frame) {
  if (frame.welcome) {
    c.attempt = 0;
    c.acked = {};
    c.read = {};
    setStatus(`connected as ${frame.welcome.user_id}`, "open");
    heartbeat(c, parseFloat(frame.welcome.heartbeat_interval) || 30);
    for (const id of c.pending.keys()) transmitSend(c, id);
  } else if (frame.message) {
    const m = frame.message;
    const seq = Number(m.seq);
    if (seq > (c.cursors[m.conversation_id] || 0)) {
      showMessage({ ...m, text: fromBase64(m.body) }, m.sender_id === c.user);
      advance(c, m.conversation_id, seq);
    }
    scheduleAck(c);
  } else if (frame.send_ack) {
    const ack = frame.send_ack;
    const p = c.pending.get(ack.client_message_id);
    c.pending.delete(ack.client_message_id);
    if (p && !ui.messages.querySelector(`li[data-conversation="${CSS.escape(ack.conversation_id)}"][data-seq="${Number(ack.seq)}"]`)) {
      showMessage({ ...ack, sender_id: c.user, text: p.text }, true);
    }
    advance(c, ack.conversation_id, Number(ack.seq));
    scheduleAck(c);
  } else if (frame.sync_complete) {
    for (const cursor of frame.sync_complete.cursors || []) advance(c, cursor.conversation_id, Number(cursor.seq || 0));
    scheduleAck(c);
    const text = params.get("send");
    if (text && !c.autoSendDone && ui.conversation.value) {
      c.autoSendDone = true;
      sendText(c, ui.conversation.value, text);
    }
  } else if (frame.receipt) {
    const r = frame.receipt;
    if (r.user_id === c.user) return; // our own read position, synced from another device
    const kind = r.kind === "RECEIPT_KIND_READ" ? "read" : "delivered";
    for (const li of ui.messages.querySelectorAll(`li.mine[data-conversation="${CSS.escape(r.conversation_id)}"]`)) {
      if (Number(li.dataset.seq) <= Number(r.seq) && li.dataset.receipt !== "read") li.dataset.receipt = kind;
    }
  } else if (frame.error) {
    const e = frame.error;
    if (c.pending.has(e.request_id)) c.pending.delete(e.request_id);
    showSystem(`${e.code}: ${e.message}`, true);
  }
  // typing, presence and pong frames are not shown by this page.
}

// --- wiring --------------------------------------------------------------------------

ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  const user = ui.user.value.trim() || tokenSubject(token);
  if (!user) {
    setStatus("cannot tell the user from the token: fill in User", "error");
    return;
  }
  ui.user.value = user;
  connect(user, token);
});

ui.disconnect.addEventListener("click", disconnect);

ui.compose.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!chat) {
    setStatus("connect first", "error");
    return;
  }
  sendText(chat, ui.conversation.value.trim(), ui.text.value);
  ui.text.value = "";
});

ui.user.value = params.get("as") || "";
ui.token.value = params.get("token") || "";
ui.conversation.value = params.get("conversation") || "";
if (ui.token.value) ui.login.requestSubmit();
