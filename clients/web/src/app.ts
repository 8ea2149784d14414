/**
 * Parley web chat, on the TypeScript SDK (clients/typescript). Bundled by
 * esbuild into services/gateway/web/app.js (`make web`), which the gateway serves next
 * to index.html and style.css.
 *
 * Sign-in asks the gateway's development endpoint (/v1/dev/token, only on a
 * stack with PARLEY_ENV=development) for a token, or takes a pasted JWT. The
 * user id and device id stay in localStorage, so a reload signs in again and
 * the session resumes from its cursors.
 */
import {
  ConversationKind,
  type ConversationSummary,
  type Message,
  type MessageEvent,
  ParleyClient,
  type ParleyError,
  PresenceStatus,
  ReceiptKind,
  type Session,
  WebStorageCursorStore,
  newClientMessageId,
} from "../../typescript/src/index.js";

const PAGE = 30;
const TYPING_EVERY_MS = 2_000;
const TYPING_SHOWN_MS = 6_000;
// The gateway pushes presence only for the contacts a session had when it opened, so the
// peers of conversations started since are polled (and everyone's dots stay right).
const PRESENCE_POLL_MS = 5_000;
const STORAGE = "parley.web";

function $<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`#${id} is missing from index.html`);
  return element as T;
}

const ui = {
  signin: $("signin"),
  signinForm: $<HTMLFormElement>("signin-form"),
  signinUser: $<HTMLInputElement>("signin-user"),
  signinToken: $<HTMLInputElement>("signin-token"),
  signinError: $("signin-error"),
  chat: $("chat"),
  me: $("me"),
  status: $("status"),
  signout: $("signout"),
  newChat: $<HTMLFormElement>("new-chat"),
  newMembers: $<HTMLInputElement>("new-members"),
  newName: $<HTMLInputElement>("new-name"),
  newError: $("new-error"),
  conversations: $<HTMLUListElement>("conversations"),
  title: $("conversation-title"),
  typing: $("typing"),
  scroller: $("scroller"),
  historyStatus: $("history-status"),
  messages: $<HTMLOListElement>("messages"),
  compose: $<HTMLFormElement>("compose"),
  text: $<HTMLInputElement>("text"),
  send: $<HTMLButtonElement>("send"),
};

interface Saved {
  userId: string;
  token?: string;
  deviceId: string;
}

function loadSaved(): Saved | undefined {
  try {
    const value = JSON.parse(localStorage.getItem(STORAGE) ?? "null") as Saved | null;
    return value && typeof value.userId === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

async function devToken(userId: string): Promise<string> {
  const response = await fetch(`/v1/dev/token?user_id=${encodeURIComponent(userId)}`, { cache: "no-store" });
  if (response.status === 404) throw new Error("this gateway mints no tokens (not a development stack): paste a JWT");
  const body = (await response.json()) as { token?: string; error?: string };
  if (!response.ok || body.token === undefined) throw new Error(body.error ?? `sign-in failed (${response.status})`);
  return body.token;
}

// ---- state of one signed-in page ----------------------------------------------------------------

interface ShownMessage {
  seq: number;
  senderId: string;
  text: string;
  at: Date | undefined;
  clientMessageId: string;
}

interface ConversationView {
  summary: ConversationSummary;
  id: string;
  title: string;
  peer: string | undefined;
  members: string[];
  unread: number;
  lastSeq: number;
  preview: string;
  /** Loaded messages by seq (history pages and live ones). */
  messages: Map<number, ShownMessage>;
  /** This page's sends not acknowledged yet, by client_message_id, shown after the messages
   * (kept here, not only in the DOM: a re-render while a send is in flight must keep it). */
  pending: Map<string, ShownMessage & { failed?: string }>;
  /** Oldest seq loaded; the next history page is before it. */
  oldest: number | undefined;
  hasOlder: boolean;
  loaded: boolean;
  /** Highest seq any other member received / read (for the ticks). */
  delivered: number;
  read: number;
}

class ChatPage {
  private readonly conversations = new Map<string, ConversationView>();
  private readonly presence = new Map<string, PresenceStatus>();
  private readonly typingUntil = new Map<string, Map<string, number>>();
  private active: string | undefined;
  private session: Session | undefined;
  private lastTypingSent = 0;
  private loadingOlder = false;

  constructor(
    readonly userId: string,
    private readonly client: ParleyClient,
    private readonly deviceId: string,
  ) {}

  async start(): Promise<void> {
    ui.me.textContent = this.userId;
    const session = await this.client.session({
      deviceId: this.deviceId,
      subscribePresence: true,
      cursorStore: new WebStorageCursorStore(localStorage, `${STORAGE}.cursors.${this.userId}`),
    });
    this.session = session;
    session.on("state", (event) => {
      ui.status.textContent = event.state === "disconnected" ? `reconnecting (${event.reason ?? ""})` : event.state;
      ui.status.dataset.state = event.state;
    });
    session.on("message", (event) => this.onMessage(event));
    session.on("receipt", (receipt) => {
      const view = this.conversations.get(receipt.conversationId);
      if (view === undefined || receipt.userId === this.userId) return;
      const seq = Number(receipt.seq);
      if (receipt.kind === ReceiptKind.READ) view.read = Math.max(view.read, seq);
      view.delivered = Math.max(view.delivered, seq);
      if (view.id === this.active) this.renderTicks(view);
    });
    session.on("typing", (typing) => {
      if (typing.userId === this.userId) return;
      const users = this.typingUntil.get(typing.conversationId) ?? new Map<string, number>();
      if (typing.typing) users.set(typing.userId, Date.now() + TYPING_SHOWN_MS);
      else users.delete(typing.userId);
      this.typingUntil.set(typing.conversationId, users);
      this.renderTyping();
    });
    session.on("presence", (presence) => {
      this.presence.set(presence.userId, presence.status);
      this.renderList();
    });
    session.on("syncComplete", () => void this.refreshList());
    session.on("error", (error) => console.warn("parley:", error.message));
    setInterval(() => this.renderTyping(), 1_000);
    setInterval(() => void this.refreshPresence().catch(() => undefined), PRESENCE_POLL_MS);
    await this.refreshList();
    await session.waitSynced();
  }

  async stop(): Promise<void> {
    await this.session?.close();
    this.client.close();
  }

  // ---- conversation list -------------------------------------------------------------------

  async refreshList(): Promise<void> {
    const summaries = await this.client.allConversations();
    for (const summary of summaries) {
      const conversation = summary.conversation;
      if (conversation === undefined) continue;
      const existing = this.conversations.get(conversation.id);
      const peer =
        conversation.kind === ConversationKind.DIRECT ? conversation.memberIds.find((m) => m !== this.userId) : undefined;
      const last = summary.lastMessage;
      const view: ConversationView = existing ?? {
        summary,
        id: conversation.id,
        title: "",
        peer,
        members: [],
        unread: 0,
        lastSeq: 0,
        preview: "",
        messages: new Map(),
        pending: new Map(),
        oldest: undefined,
        hasOlder: true,
        loaded: false,
        delivered: 0,
        read: 0,
      };
      view.summary = summary;
      view.members = [...conversation.memberIds];
      view.title = peer ?? (conversation.name || view.members.join(", "));
      // The server's count, unless this page already knows better (the conversation is open).
      view.unread = view.id === this.active ? 0 : Number(summary.unreadCount);
      if (Number(summary.lastSeq) >= view.lastSeq) {
        view.lastSeq = Number(summary.lastSeq);
        view.preview = last ? `${last.senderId}: ${decode(last.body)}` : "";
      }
      this.conversations.set(view.id, view);
    }
    await this.refreshPresence();
  }

  private async refreshPresence(): Promise<void> {
    const peers = [...this.conversations.values()].flatMap((v) => (v.peer ? [v.peer] : []));
    if (peers.length > 0) {
      for (const p of await this.client.presence(peers.slice(0, 500))) this.presence.set(p.userId, p.status);
    }
    this.renderList();
  }

  private renderList(): void {
    const views = [...this.conversations.values()].sort((a, b) => activity(b) - activity(a));
    ui.conversations.replaceChildren(
      ...views.map((view) => {
        const li = document.createElement("li");
        li.dataset.conversation = view.id;
        li.classList.toggle("active", view.id === this.active);
        const dot = document.createElement("span");
        dot.className = "dot";
        dot.dataset.status = view.peer ? statusName(this.presence.get(view.peer)) : "group";
        const title = document.createElement("span");
        title.className = "title";
        title.textContent = view.title;
        const unread = document.createElement("span");
        unread.className = "unread";
        unread.dataset.count = String(view.unread);
        unread.textContent = String(view.unread);
        const preview = document.createElement("span");
        preview.className = "preview";
        preview.textContent = view.preview;
        li.append(dot, title, unread, preview);
        li.addEventListener("click", () => void this.open(view.id));
        return li;
      }),
    );
  }

  async startConversation(members: string[], name: string): Promise<void> {
    const others = members.filter((m) => m !== this.userId);
    if (others.length === 0) throw new Error("name at least one other user");
    const conversation =
      others.length === 1 && name === ""
        ? (await this.client.createDirect(others[0] as string)).conversation
        : await this.client.createGroup(name || others.join(", "), others);
    await this.refreshList();
    await this.open(conversation.id);
  }

  // ---- one conversation --------------------------------------------------------------------

  async open(conversationId: string): Promise<void> {
    const view = this.conversations.get(conversationId);
    if (view === undefined) return;
    this.active = conversationId;
    ui.title.textContent = view.title;
    ui.text.disabled = ui.send.disabled = false;
    ui.messages.replaceChildren();
    if (!view.loaded) {
      const page = await this.client.history(conversationId, { limit: PAGE });
      this.addMessages(view, page.messages);
      view.hasOlder = page.hasMore;
      view.loaded = true;
    }
    if (this.active !== conversationId) return;
    this.renderMessages(view);
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    this.markRead(view);
    this.renderList();
    this.renderTyping();
    ui.text.focus();
  }

  private addMessages(view: ConversationView, messages: Message[]): void {
    for (const m of messages) {
      const seq = Number(m.seq);
      view.messages.set(seq, {
        seq,
        senderId: m.senderId,
        text: decode(m.body),
        at: m.serverTime ? new Date(Number(m.serverTime.seconds) * 1000) : undefined,
        clientMessageId: m.clientMessageId,
      });
      view.oldest = Math.min(view.oldest ?? seq, seq);
      view.lastSeq = Math.max(view.lastSeq, seq);
    }
  }

  async loadOlder(): Promise<void> {
    const view = this.active ? this.conversations.get(this.active) : undefined;
    if (view === undefined || !view.hasOlder || this.loadingOlder || view.oldest === undefined) return;
    this.loadingOlder = true;
    ui.historyStatus.textContent = "loading older messages…";
    try {
      const page = await this.client.history(view.id, { limit: PAGE, beforeSeq: view.oldest });
      const height = ui.scroller.scrollHeight;
      this.addMessages(view, page.messages);
      view.hasOlder = page.hasMore;
      if (view.id === this.active) {
        this.renderMessages(view);
        // Keep what the user was looking at in place.
        ui.scroller.scrollTop += ui.scroller.scrollHeight - height;
      }
    } finally {
      this.loadingOlder = false;
      ui.historyStatus.textContent = view.hasOlder ? "" : "beginning of the conversation";
    }
  }

  private renderMessages(view: ConversationView): void {
    const seqs = [...view.messages.keys()].sort((a, b) => a - b);
    const pending = [...view.pending.values()].map((m) => {
      const li = this.messageElement(view, m);
      li.dataset.tick = m.failed === undefined ? "sending" : "failed";
      if (m.failed !== undefined) li.title = m.failed;
      return li;
    });
    ui.messages.replaceChildren(
      ...seqs.map((seq) => this.messageElement(view, view.messages.get(seq) as ShownMessage)),
      ...pending,
    );
    ui.historyStatus.textContent = view.hasOlder ? "" : "beginning of the conversation";
  }

  private messageElement(view: ConversationView, m: ShownMessage): HTMLLIElement {
    const li = document.createElement("li");
    li.className = "message";
    li.dataset.conversation = view.id;
    li.dataset.seq = String(m.seq);
    li.dataset.sender = m.senderId;
    li.dataset.cmid = m.clientMessageId;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${m.senderId}${m.at ? ` · ${m.at.toLocaleTimeString()}` : ""}`;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = m.text;
    li.append(meta, body);
    if (m.senderId === this.userId) {
      li.classList.add("mine");
      const ticks = document.createElement("span");
      ticks.className = "ticks";
      meta.append(ticks);
      li.dataset.tick = tick(view, m.seq);
    }
    return li;
  }

  private renderTicks(view: ConversationView): void {
    for (const li of ui.messages.querySelectorAll<HTMLLIElement>("li.mine")) {
      const seq = Number(li.dataset.seq);
      if (seq > 0) li.dataset.tick = tick(view, seq);
    }
  }

  private renderTyping(): void {
    const users = this.active ? this.typingUntil.get(this.active) : undefined;
    const now = Date.now();
    const names = users ? [...users].filter(([, until]) => until > now).map(([u]) => u) : [];
    ui.typing.textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  private markRead(view: ConversationView): void {
    view.unread = 0;
    if (view.lastSeq > 0) this.session?.markRead(view.id, view.lastSeq);
  }

  private onMessage(event: MessageEvent): void {
    const view = this.conversations.get(event.conversationId);
    if (view === undefined) {
      // A conversation someone just started with us.
      void this.refreshList();
      return;
    }
    const known = view.messages.has(event.seq);
    if (view.loaded) this.addMessages(view, [event.message]);
    if (event.seq > view.lastSeq || !view.loaded) {
      view.lastSeq = Math.max(view.lastSeq, event.seq);
    }
    view.preview = `${event.senderId}: ${event.text}`;
    if (view.id === this.active && document.visibilityState !== "hidden") {
      if (!known) {
        const atBottom = ui.scroller.scrollHeight - ui.scroller.scrollTop - ui.scroller.clientHeight < 40;
        this.renderMessages(view);
        if (atBottom || event.senderId === this.userId) ui.scroller.scrollTop = ui.scroller.scrollHeight;
      }
      this.markRead(view);
      this.typingUntil.get(view.id)?.delete(event.senderId);
      this.renderTyping();
    } else if (event.senderId !== this.userId && !known) {
      view.unread += 1;
    }
    this.renderList();
  }

  async send(text: string): Promise<void> {
    const view = this.active ? this.conversations.get(this.active) : undefined;
    if (view === undefined || this.session === undefined) return;
    const clientMessageId = newClientMessageId();
    // Shown at once, ticked "sending" until the server's ack gives it its seq.
    view.pending.set(clientMessageId, { seq: 0, senderId: this.userId, text, at: new Date(), clientMessageId });
    if (this.active === view.id) this.renderMessages(view);
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    this.session.typing(view.id, false);
    this.lastTypingSent = 0;
    try {
      const ack = await this.session.send(view.id, text, { clientMessageId });
      const seq = Number(ack.seq);
      view.pending.delete(clientMessageId);
      view.messages.set(seq, { seq, senderId: this.userId, text, at: new Date(), clientMessageId });
      view.lastSeq = Math.max(view.lastSeq, seq);
      view.preview = `${this.userId}: ${text}`;
      if (this.active === view.id) this.renderMessages(view);
      this.renderList();
    } catch (error) {
      const failed = view.pending.get(clientMessageId);
      if (failed !== undefined) failed.failed = (error as ParleyError).message;
      if (this.active === view.id) this.renderMessages(view);
      throw error;
    }
  }

  typed(): void {
    const now = Date.now();
    if (this.active && now - this.lastTypingSent > TYPING_EVERY_MS) {
      this.lastTypingSent = now;
      this.session?.typing(this.active, true);
    }
  }
}

function tick(view: ConversationView, seq: number): string {
  if (view.read >= seq) return "read";
  if (view.delivered >= seq) return "delivered";
  return "sent";
}

function activity(view: ConversationView): number {
  const last = view.summary.lastMessage?.serverTime ?? view.summary.conversation?.createdAt;
  return Math.max(last ? Number(last.seconds) : 0, view.lastSeq > Number(view.summary.lastSeq) ? Date.now() / 1000 : 0);
}

function statusName(status: PresenceStatus | undefined): string {
  switch (status) {
    case PresenceStatus.ONLINE:
      return "online";
    case PresenceStatus.AWAY:
      return "away";
    default:
      return "offline";
  }
}

function decode(body: Uint8Array): string {
  return new TextDecoder().decode(body);
}

// ---- wiring -----------------------------------------------------------------------------------

let page: ChatPage | undefined;

async function signIn(saved: Saved): Promise<void> {
  const wsBase = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
  let token = saved.token;
  const client = new ParleyClient({
    url: wsBase,
    token: async ({ refresh }) => {
      if (token === undefined || (refresh && saved.token === undefined)) token = await devToken(saved.userId);
      return token;
    },
  });
  // Fail here, on the sign-in form, if the token cannot be had or is refused.
  await client.listConversations({ limit: 1 });
  localStorage.setItem(STORAGE, JSON.stringify(saved));
  page = new ChatPage(saved.userId, client, saved.deviceId);
  ui.signin.hidden = true;
  ui.chat.hidden = false;
  await page.start();
}

ui.signinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.signinError.textContent = "";
  const pasted = ui.signinToken.value.trim();
  const saved: Saved = {
    userId: ui.signinUser.value.trim(),
    deviceId: loadSaved()?.deviceId ?? `web-${newClientMessageId().slice(0, 12)}`,
    ...(pasted ? { token: pasted } : {}),
  };
  signIn(saved).catch((error: Error) => {
    ui.signinError.textContent = error.message;
    ui.signin.hidden = false;
    ui.chat.hidden = true;
  });
});

ui.signout.addEventListener("click", () => {
  localStorage.removeItem(STORAGE);
  void page?.stop().finally(() => location.reload());
});

ui.newChat.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.newError.textContent = "";
  const members = ui.newMembers.value.split(/[\s,]+/).filter((m) => m !== "");
  page
    ?.startConversation(members, ui.newName.value.trim())
    .then(() => {
      ui.newMembers.value = ui.newName.value = "";
    })
    .catch((error: Error) => {
      ui.newError.textContent = error.message;
    });
});

ui.compose.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (text.trim() === "") return;
  ui.text.value = "";
  page?.send(text).catch((error: Error) => console.warn("send failed:", error.message));
});

ui.text.addEventListener("input", () => page?.typed());
ui.scroller.addEventListener("scroll", () => {
  if (ui.scroller.scrollTop < 60) void page?.loadOlder();
});

const saved = loadSaved();
if (saved !== undefined) {
  ui.signinUser.value = saved.userId;
  signIn(saved).catch((error: Error) => {
    ui.signinError.textContent = error.message;
    ui.signin.hidden = false;
    ui.chat.hidden = true;
  });
}
