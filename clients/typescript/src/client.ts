/**
 * The entry point: one ParleyClient per signed-in user; `session()` opens the
 * real-time session, the other methods are unary calls over `/v1/call`.
 */
import { Backoff } from "./backoff.js";
import { CallChannel } from "./calls.js";
import type { CursorStore } from "./cursors.js";
import type { Conversation, ConversationSummary, Message, Presence, SendAck } from "./gen/parley/v1/messages_pb.js";
import { type Encoding, Session, type TokenProvider, newClientMessageId } from "./session.js";
import { type WebSocketFactory, globalWebSocketFactory } from "./transport.js";

export interface ClientOptions {
  /** Base URL of the gateway's bridge, e.g. `wss://chat.example.com` or `wss://127.0.0.1:8080`. */
  url: string;
  /** A JWT, or the token refresh hook (called before each connect; `refresh` after a refusal). */
  token: string | TokenProvider;
  /** How to open sockets; default: the global WebSocket (browsers, Node 22+). Node 18/20: `await nodeWebSocketFactory()`. */
  webSocket?: WebSocketFactory;
  callTimeoutMs?: number;
}

export interface SessionStartOptions {
  deviceId?: string;
  cursorStore?: CursorStore;
  ackMode?: "auto" | "manual";
  ackIntervalMs?: number;
  subscribePresence?: boolean;
  backoff?: Backoff;
  connectTimeoutMs?: number;
  gapTimeoutMs?: number;
  sendRetries?: number;
  retryRateLimited?: boolean;
  encoding?: Encoding;
}

export interface HistoryPage {
  messages: Message[];
  /** Pass as beforeSeq (paging back) or afterSeq (paging forward); 0 when there is no further page. */
  nextCursor: number;
  hasMore: boolean;
}

export class ParleyClient {
  readonly url: string;
  private readonly token: TokenProvider;
  private readonly webSocket: WebSocketFactory;
  private readonly calls: CallChannel;

  constructor(options: ClientOptions) {
    this.url = options.url.replace(/\/+$/, "");
    const token = options.token;
    this.token = typeof token === "string" ? () => token : token;
    const factory = options.webSocket ?? globalWebSocketFactory();
    if (factory === undefined) {
      throw new Error("no global WebSocket here: pass webSocket (in Node 18/20: await nodeWebSocketFactory())");
    }
    this.webSocket = factory;
    this.calls = new CallChannel(this.url, this.token, this.webSocket, options.callTimeoutMs);
  }

  /** A started session (connecting in the background; `await session.waitSynced()` for the backlog). */
  async session(options: SessionStartOptions = {}): Promise<Session> {
    const session = new Session({
      ...options,
      url: this.url,
      token: this.token,
      webSocket: this.webSocket,
      deviceId: options.deviceId ?? `ts-${newClientMessageId().slice(0, 12)}`,
    });
    return session.start();
  }

  async createDirect(peerUserId: string): Promise<{ conversation: Conversation; created: boolean }> {
    const reply = await this.calls.call("createDirect", { peerUserId });
    return { conversation: required(reply.conversation), created: reply.created };
  }

  async createGroup(name: string, memberIds: string[]): Promise<Conversation> {
    const reply = await this.calls.call("createGroup", { name, memberIds });
    return required(reply.conversation);
  }

  async addMembers(conversationId: string, userIds: string[]): Promise<Conversation> {
    return required((await this.calls.call("addMembers", { conversationId, userIds })).conversation);
  }

  async removeMembers(conversationId: string, userIds: string[]): Promise<Conversation> {
    return required((await this.calls.call("removeMembers", { conversationId, userIds })).conversation);
  }

  async getConversation(conversationId: string): Promise<Conversation> {
    return required((await this.calls.call("getConversation", { conversationId })).conversation);
  }

  /** The caller's conversations, most recently active first, with unread counts. */
  async listConversations(options: { limit?: number; pageToken?: string } = {}): Promise<{
    conversations: ConversationSummary[];
    nextPageToken: string;
  }> {
    const reply = await this.calls.call("listConversations", {
      limit: options.limit ?? 0,
      pageToken: options.pageToken ?? "",
    });
    return { conversations: reply.conversations, nextPageToken: reply.nextPageToken };
  }

  /** Every conversation of the caller (all pages). */
  async allConversations(): Promise<ConversationSummary[]> {
    const out: ConversationSummary[] = [];
    let pageToken = "";
    do {
      const page = await this.listConversations({ limit: 200, pageToken });
      out.push(...page.conversations);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return out;
  }

  /** One page of history in ascending seq; neither cursor: the newest page. */
  async history(
    conversationId: string,
    options: { beforeSeq?: number; afterSeq?: number; limit?: number } = {},
  ): Promise<HistoryPage> {
    const reply = await this.calls.call("getHistory", {
      conversationId,
      limit: options.limit ?? 0,
      ...(options.beforeSeq !== undefined ? { beforeSeq: BigInt(options.beforeSeq) } : {}),
      ...(options.afterSeq !== undefined ? { afterSeq: BigInt(options.afterSeq) } : {}),
    });
    return { messages: reply.messages, nextCursor: Number(reply.nextCursor), hasMore: reply.hasMore };
  }

  async presence(userIds: string[]): Promise<Presence[]> {
    return (await this.calls.call("getPresence", { userIds })).presences;
  }

  /**
   * One-shot send without a session (ChatService.Send over the bridge); idempotent by
   * clientMessageId, so it is retried after the server's retry-after when shed or rate limited.
   */
  async sendOnce(
    conversationId: string,
    text: string | Uint8Array,
    options: { clientMessageId?: string; deviceId?: string } = {},
  ): Promise<SendAck> {
    const body = typeof text === "string" ? new TextEncoder().encode(text) : text;
    const clientMessageId = options.clientMessageId ?? newClientMessageId();
    const reply = await this.calls.call("send", { conversationId, clientMessageId, body, deviceId: options.deviceId ?? "" });
    return required(reply.ack);
  }

  /** Closes the call socket (sessions are closed on their own). */
  close(): void {
    this.calls.close();
  }
}

function required<T>(value: T | undefined): T {
  if (value === undefined) throw new Error("the server's answer lacks a required field");
  return value;
}
