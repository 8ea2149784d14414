/**
 * A real-time session over the gateway's WebSocket bridge (`/v1/connect`).
 *
 * One session is one device's live connection, with the semantics of the
 * Python SDK (clients/python/parley_client/session.py): it reconnects with
 * jittered exponential backoff, says `hello` with its cursors so the server
 * resends exactly what was missed, drops duplicates by (conversation_id, seq),
 * releases each conversation in seq order, and re-sends every send that was
 * not acknowledged before a break with the same client_message_id (the
 * server deduplicates, so a retried send never creates a second message).
 *
 * Delivery is at-least-once: a message's cursor is saved (and, with automatic
 * acks, acknowledged) only once every `message` listener has finished with it
 * (returned, or its promise settled). Listeners run one event at a time.
 */
import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";

import { Backoff, retryDelayMs } from "./backoff.js";
import { type CursorStore, MemoryCursorStore } from "./cursors.js";
import {
  GrpcStatus,
  ParleyError,
  SendTimeoutError,
  SessionClosedError,
  fromErrorFrame,
  isFatalStatus,
  statusOfCloseCode,
} from "./errors.js";
import type { ConnectionState, Listener, MessageEvent, SessionEvents } from "./events.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
} from "./gen/parley/v1/gateway_pb.js";
import { ErrorCode } from "./gen/parley/v1/errors_pb.js";
import { CursorSchema, type Message, type SendAck } from "./gen/parley/v1/messages_pb.js";
import { OrderBuffer } from "./ordering.js";
import { OPEN, SUBPROTOCOL, type SocketLike, type WebSocketFactory, toBytes } from "./transport.js";

/** Why a token is asked for: the first connect, or a reconnect after the server refused the last one. */
export interface TokenRequest {
  refresh: boolean;
}
/** The token refresh hook: called before every connect (and call socket); return a valid JWT. */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>;

export type Encoding = "binary" | "json";

export interface SessionOptions {
  /** Base URL of the bridge, e.g. `wss://127.0.0.1:8080`. */
  url: string;
  token: TokenProvider;
  webSocket: WebSocketFactory;
  deviceId: string;
  cursorStore?: CursorStore;
  ackMode?: "auto" | "manual";
  ackIntervalMs?: number;
  subscribePresence?: boolean;
  backoff?: Backoff;
  connectTimeoutMs?: number;
  gapTimeoutMs?: number;
  /** Re-sends of one send after transient errors (unavailable, deadline, overloaded). */
  sendRetries?: number;
  /** Also retry RATE_LIMITED sends after the server's retry-after (default: reject them). */
  retryRateLimited?: boolean;
  encoding?: Encoding;
}

const DEFAULT_HEARTBEAT_MS = 30_000;

type OwnSent = { own: true; conversationId: string; seq: number };
type Held = Message | OwnSent;

interface PendingSend {
  requestId: string;
  key: string;
  frame: ConnectRequest;
  resolve: (ack: SendAck) => void;
  reject: (error: unknown) => void;
  attempts: number;
  /** Not on the stream: waiting for the outbox's hold to end (or for a welcome). */
  waiting: boolean;
}

interface Outcome {
  reason: string;
  error?: ParleyError;
  unauthenticated?: boolean;
  /** The socket never opened (browsers hide why: a refused token looks like a network failure). */
  beforeOpen?: boolean;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function newClientMessageId(): string {
  return randomId();
}

export class Session {
  readonly deviceId: string;
  sessionId = "";
  userId = "";
  state: ConnectionState = "connecting";

  private readonly options: Required<Omit<SessionOptions, "cursorStore" | "backoff">>;
  private readonly store: CursorStore;
  private readonly backoff: Backoff;
  private readonly listeners = new Map<keyof SessionEvents, Set<Listener<never>>>();

  private order = new OrderBuffer<Held>();
  private committed = new Map<string, number>();
  private ackTarget = new Map<string, number>();
  private ackSent = new Map<string, number>();
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private reads = new Map<string, number>();
  // Insertion order is send order: the oldest waiting send is the next probe.
  private pending = new Map<string, PendingSend>();
  private pendingByKey = new Map<string, string>();
  // A shed send holds every send of the session until its retry-after (see onError).
  private heldUntil = 0; // performance.now(): monotonic
  private holdTimer: ReturnType<typeof setTimeout> | undefined;
  private probe: string | undefined; // request id
  private nextRequestId = 1;
  private gaps = new Map<string, { key: string; since: number; resynced: boolean }>();
  // Events are handed to listeners one at a time, in order.
  private chain: Promise<void> = Promise.resolve();

  private socket: SocketLike | undefined;
  private connected = false;
  private welcomes = 0;
  private lastRx = 0;
  private finishCurrent: ((outcome: Outcome) => void) | undefined;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  private failure: ParleyError | undefined;
  private syncedWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private synced = false;

  constructor(options: SessionOptions) {
    this.deviceId = options.deviceId;
    this.store = options.cursorStore ?? new MemoryCursorStore();
    this.backoff = options.backoff ?? new Backoff();
    this.options = {
      url: options.url.replace(/\/+$/, ""),
      token: options.token,
      webSocket: options.webSocket,
      deviceId: options.deviceId,
      ackMode: options.ackMode ?? "auto",
      ackIntervalMs: options.ackIntervalMs ?? 50,
      subscribePresence: options.subscribePresence ?? false,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      gapTimeoutMs: options.gapTimeoutMs ?? 2_000,
      sendRetries: options.sendRetries ?? 5,
      retryRateLimited: options.retryRateLimited ?? false,
      encoding: options.encoding ?? "binary",
    };
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Loads the cursors and starts connecting in the background; idempotent. */
  async start(): Promise<this> {
    if (this.closed) throw this.failure ?? new SessionClosedError();
    if (this.running !== undefined) return this;
    const cursors = await this.store.load();
    this.committed = new Map(Object.entries(cursors));
    this.order = new OrderBuffer<Held>(cursors);
    this.running = this.run();
    return this;
  }

  /** Resolves at the first `sync_complete` (the backlog has been received); rejects if the session ends first. */
  waitSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.closed) return Promise.reject(this.failure ?? new SessionClosedError("session closed before it synced"));
    return new Promise((resolve, reject) => this.syncedWaiters.push({ resolve, reject }));
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Flushes acks, closes the socket and fails sends still waiting for an ack.
   * Messages not yet finished by the listeners are not committed: the next
   * session with the same cursor store gets them again.
   */
  async close(): Promise<void> {
    if (this.closed) {
      await this.running;
      return;
    }
    if (this.connected) this.flushAcks();
    this.end(new SessionClosedError());
    await this.running;
  }

  /**
   * Breaks the current connection as if the network had failed (the session
   * reconnects and resumes). For tests and for apps that know the network changed.
   */
  reconnect(reason = "reconnect requested"): void {
    this.finishCurrent?.({ reason });
  }

  // ---- events -------------------------------------------------------------------------------

  on<K extends keyof SessionEvents>(event: K, listener: Listener<SessionEvents[K]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  private emit<K extends keyof SessionEvents>(event: K, payload: SessionEvents[K], after?: () => Promise<void>): void {
    const set = this.listeners.get(event);
    const listeners = set ? [...set] : [];
    this.chain = this.chain.then(async () => {
      for (const listener of listeners) {
        try {
          await (listener as Listener<SessionEvents[K]>)(payload);
        } catch (error) {
          // A throwing listener must not stop delivery; the message still counts as handled.
          console.error(`parley: a ${event} listener failed`, error);
        }
      }
      if (after !== undefined) await after();
    });
  }

  private enqueue(task: () => Promise<void>): void {
    this.chain = this.chain.then(task).catch((error: unknown) => console.error("parley: commit failed", error));
  }

  private setState(state: ConnectionState, extra: Omit<SessionEvents["state"], "state"> = {}): void {
    this.state = state;
    this.emit("state", { state, ...extra });
  }

  // ---- what the application does ------------------------------------------------------------

  /**
   * Sends over the stream and resolves with the server's ack (its seq).
   * Survives reconnects; rejects with the error frame's ParleyError,
   * SendTimeoutError after `timeoutMs`, or SessionClosedError.
   */
  send(
    conversationId: string,
    text: string | Uint8Array,
    options: { clientMessageId?: string; timeoutMs?: number } = {},
  ): Promise<SendAck> {
    if (this.closed) return Promise.reject(this.failure ?? new SessionClosedError());
    if (this.running === undefined) return Promise.reject(new Error("session not started: call start() first"));
    const body = typeof text === "string" ? encoder.encode(text) : text;
    const cmid = options.clientMessageId ?? newClientMessageId();
    const key = `${conversationId}\u0000${cmid}`;
    const existing = this.pendingByKey.get(key);
    const promise = new Promise<SendAck>((resolve, reject) => {
      if (existing !== undefined) {
        const pending = this.pending.get(existing) as PendingSend;
        const [res, rej] = [pending.resolve, pending.reject];
        pending.resolve = (ack) => {
          res(ack);
          resolve(ack);
        };
        pending.reject = (e) => {
          rej(e);
          reject(e);
        };
        return;
      }
      const requestId = `s${this.nextRequestId++}`;
      const frame = create(ConnectRequestSchema, {
        requestId,
        frame: { case: "send", value: { conversationId, clientMessageId: cmid, body } },
      });
      const pending: PendingSend = { requestId, key, frame, resolve, reject, attempts: 0, waiting: true };
      this.pending.set(requestId, pending);
      this.pendingByKey.set(key, requestId);
      this.writeSend(pending); // waits if disconnected or held
    });
    if (options.timeoutMs === undefined) return promise;
    return new Promise<SendAck>((resolve, reject) => {
      const timer = setTimeout(() => {
        const requestId = this.pendingByKey.get(key);
        if (requestId !== undefined) this.dropPending(requestId);
        reject(new SendTimeoutError(conversationId, cmid, options.timeoutMs ?? 0));
      }, options.timeoutMs);
      promise.then(
        (ack) => {
          clearTimeout(timer);
          resolve(ack);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /** Manual acks: everything up to `seq` was processed (saves the cursor and acks now). */
  async ack(conversationId: string, seq: number): Promise<void> {
    await this.commit(conversationId, seq);
    this.flushAcks();
  }

  /** The user read everything up to `seq` (sent now, or after the next reconnect). */
  markRead(conversationId: string, seq: number): void {
    if (seq <= (this.reads.get(conversationId) ?? 0)) return;
    this.reads.set(conversationId, seq);
    this.write(readFrame(conversationId, seq));
  }

  /** Typing indicator; ephemeral, so dropped (false) while disconnected. */
  typing(conversationId: string, typing = true): boolean {
    return this.write(create(ConnectRequestSchema, { frame: { case: "typing", value: { conversationId, typing } } }));
  }

  /**
   * Asks the server to send again every message after these positions (a mid-stream
   * `sync` frame, answered by the messages and a `sync_complete`). What this session
   * already delivered is dropped by (conversation, seq). False while disconnected: the
   * next hello resumes from the session's own positions anyway.
   */
  resync(cursors: Record<string, number>): boolean {
    const list = Object.entries(cursors)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([conversationId, seq]) => create(CursorSchema, { conversationId, seq: BigInt(seq) }));
    return this.write(
      create(ConnectRequestSchema, { requestId: `y${this.nextRequestId++}`, frame: { case: "sync", value: { cursors: list } } }),
    );
  }

  /** The committed cursors (what the application finished with). */
  cursors(): Record<string, number> {
    return Object.fromEntries(this.committed);
  }

  // ---- commit -------------------------------------------------------------------------------

  private async commit(conversationId: string, seq: number): Promise<void> {
    if (seq > (this.committed.get(conversationId) ?? 0)) {
      this.committed.set(conversationId, seq);
      await this.store.save(conversationId, seq);
    }
    if (seq > (this.ackTarget.get(conversationId) ?? 0)) {
      this.ackTarget.set(conversationId, seq);
      // Coalesced: one cumulative ack per conversation per interval, whatever the message rate.
      this.ackTimer ??= setTimeout(() => {
        this.ackTimer = undefined;
        this.flushAcks();
      }, this.options.ackIntervalMs);
    }
  }

  private flushAcks(): void {
    for (const [conversationId, seq] of this.ackTarget) {
      if ((this.ackSent.get(conversationId) ?? 0) < seq) {
        const ack = create(ConnectRequestSchema, { frame: { case: "ack", value: { conversationId, seq: BigInt(seq) } } });
        if (this.write(ack)) this.ackSent.set(conversationId, seq);
      }
    }
  }

  // ---- connection loop ----------------------------------------------------------------------

  private async run(): Promise<void> {
    let refresh = false;
    let refusedInARow = 0;
    let unopenedInARow = 0;
    while (!this.closed) {
      const outcome: Outcome = await this.connectOnce(refresh).catch(
        (error: unknown): Outcome => ({ reason: `connect failed: ${String(error)}` }),
      );
      if (this.closed) break;
      const error = outcome.error;
      refusedInARow = outcome.unauthenticated === true ? refusedInARow + 1 : 0;
      unopenedInARow = outcome.beforeOpen === true ? unopenedInARow + 1 : 0;
      // Every second failure to even open asks for a fresh token too, in case that was why.
      refresh = outcome.unauthenticated === true || (unopenedInARow > 0 && unopenedInARow % 2 === 0);
      // A fresh token was refused too: reconnecting cannot help.
      if (refusedInARow >= 2 || (error !== undefined && isFatalStatus(error.grpcStatus))) {
        this.end(error ?? new ParleyError(outcome.reason, ErrorCode.UNAUTHENTICATED, GrpcStatus.UNAUTHENTICATED));
        break;
      }
      let delay = refusedInARow === 1 ? 0 : this.backoff.nextDelayMs();
      if (error?.retryAfterMs !== undefined) delay = Math.max(delay, error.retryAfterMs);
      this.setState("disconnected", { reason: outcome.reason, retryInMs: delay, ...(error ? { error } : {}) });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    await this.chain;
  }

  private hello(): ConnectRequest {
    const positions = new Map(this.committed);
    for (const [c, s] of Object.entries(this.order.positions())) positions.set(c, Math.max(s, positions.get(c) ?? 0));
    const cursors = [...positions.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([conversationId, seq]) => create(CursorSchema, { conversationId, seq: BigInt(seq) }));
    return create(ConnectRequestSchema, {
      frame: {
        case: "hello",
        value: { deviceId: this.deviceId, sync: { cursors }, subscribePresence: this.options.subscribePresence },
      },
    });
  }

  private async connectOnce(refresh: boolean): Promise<Outcome> {
    this.setState("connecting");
    const token = await this.options.token({ refresh });
    if (this.closed) return { reason: "closed" };
    const socket = this.options.webSocket(`${this.options.url}/v1/connect`, [SUBPROTOCOL, `bearer.${token}`]);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    return new Promise<Outcome>((resolve) => {
      const timers: ReturnType<typeof setTimeout>[] = [];
      let opened = false;
      let done = false;
      const finish = (outcome: Outcome): void => {
        if (done) return;
        done = true;
        for (const timer of timers) clearTimeout(timer);
        clearInterval(heartbeat);
        clearInterval(gapCheck);
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        if (socket.readyState <= OPEN) {
          try {
            socket.close(1000);
          } catch {
            // already closing
          }
        }
        this.connected = false;
        this.socket = undefined;
        this.finishCurrent = undefined;
        resolve(outcome);
      };
      this.finishCurrent = finish;
      let heartbeat: ReturnType<typeof setInterval> | undefined;
      let gapCheck: ReturnType<typeof setInterval> | undefined;
      timers.push(
        setTimeout(() => {
          if (!this.connected) finish({ reason: `no welcome within ${this.options.connectTimeoutMs} ms` });
        }, this.options.connectTimeoutMs),
      );
      socket.onopen = () => {
        opened = true;
        this.lastRx = Date.now();
        this.rawWrite(socket, this.hello());
      };
      socket.onerror = (event: unknown) => {
        // Node's `ws` reports a refused upgrade (HTTP 401) here; browsers hide the status.
        const text = String((event as { message?: unknown })?.message ?? "");
        if (!opened) {
          finish({ reason: `connection failed ${text}`.trim(), unauthenticated: text.includes("401"), beforeOpen: true });
        }
      };
      socket.onclose = (event) => {
        const status = statusOfCloseCode(event.code);
        const reason = `closed by the server (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
        const error =
          event.code >= 4000 || event.code === 1011 || event.code === 1013
            ? new ParleyError(event.reason || reason, ErrorCode.UNSPECIFIED, status)
            : undefined;
        finish({
          reason: opened ? reason : "connection refused",
          ...(error ? { error } : {}),
          unauthenticated: status === GrpcStatus.UNAUTHENTICATED,
          beforeOpen: !opened,
        });
      };
      socket.onmessage = (event) => {
        this.lastRx = Date.now();
        let frame: ConnectResponse;
        try {
          const bytes = toBytes(event.data);
          frame =
            bytes !== undefined
              ? fromBinary(ConnectResponseSchema, bytes)
              : fromJsonString(ConnectResponseSchema, String(event.data), { ignoreUnknownFields: true });
        } catch (error) {
          finish({ reason: `undecodable frame from the server: ${String(error)}` });
          return;
        }
        if (frame.frame.case === "welcome") {
          const interval = frame.frame.value.heartbeatInterval;
          const heartbeatMs = interval
            ? Number(interval.seconds) * 1000 + interval.nanos / 1e6 || DEFAULT_HEARTBEAT_MS
            : DEFAULT_HEARTBEAT_MS;
          const every = Math.max(50, heartbeatMs / 2);
          // The server answers each ping, so this much silence means the connection is dead
          // even when TCP has not noticed.
          const silenceLimit = Math.max(2 * heartbeatMs, 2 * every + 1000);
          let nonce = 0;
          heartbeat = setInterval(() => {
            const silent = Date.now() - this.lastRx;
            if (silent > silenceLimit) {
              finish({ reason: `no frame from the server for ${silent} ms` });
              return;
            }
            nonce += 1;
            this.write(create(ConnectRequestSchema, { frame: { case: "ping", value: { nonce: BigInt(nonce) } } }));
          }, every);
          gapCheck = setInterval(() => {
            const resync = this.checkGaps(Date.now());
            if (resync !== undefined) finish({ reason: resync });
          }, this.options.gapTimeoutMs / 2);
          this.onWelcome(socket, frame.frame.value.sessionId, frame.frame.value.userId);
          return;
        }
        if (!this.connected && frame.frame.case === "error") {
          // An error instead of the welcome: the socket closes next with its code.
          const error = fromErrorFrame(frame.frame.value);
          finish({
            reason: error.message,
            error,
            unauthenticated: error.grpcStatus === GrpcStatus.UNAUTHENTICATED,
          });
          return;
        }
        this.dispatch(frame);
      };
    });
  }

  private onWelcome(socket: SocketLike, sessionId: string, userId: string): void {
    this.sessionId = sessionId;
    this.userId = userId;
    this.connected = true;
    this.setState("connected", { reconnects: this.welcomes });
    this.welcomes += 1;
    // Acks and reads written just before a break may be lost: resend the latest ones.
    this.ackSent.clear();
    this.flushAcks();
    for (const [conversationId, seq] of this.reads) this.rawWrite(socket, readFrame(conversationId, seq));
    for (const pending of this.pending.values()) this.writeSend(pending);
  }

  private checkGaps(now: number): string | undefined {
    const gaps = new Map(this.order.gaps().map((g) => [g.conversationId, g]));
    for (const c of [...this.gaps.keys()]) if (!gaps.has(c)) this.gaps.delete(c);
    for (const [conversationId, gap] of gaps) {
      const key = `${gap.position}:${gap.firstHeld}`;
      const state = this.gaps.get(conversationId);
      if (state === undefined || state.key !== key) {
        this.gaps.set(conversationId, { key, since: now, resynced: false });
        continue;
      }
      const age = now - state.since;
      if (gap.position !== undefined && !state.resynced && age >= this.options.gapTimeoutMs) {
        // The server resyncs on hello: reconnecting with our position as cursor fills the gap.
        state.resynced = true;
        return `gap in ${conversationId} after seq ${gap.position}: resyncing`;
      }
      if (age >= (gap.position !== undefined ? 3 : 1) * this.options.gapTimeoutMs) {
        this.gaps.delete(conversationId);
        this.release(this.order.skipGap(conversationId));
      }
    }
    return undefined;
  }

  // ---- frames -------------------------------------------------------------------------------

  private rawWrite(socket: SocketLike, frame: ConnectRequest): boolean {
    if (socket.readyState !== OPEN) return false;
    socket.send(
      this.options.encoding === "binary" ? toBinary(ConnectRequestSchema, frame) : toJsonString(ConnectRequestSchema, frame),
    );
    return true;
  }

  private write(frame: ConnectRequest): boolean {
    if (this.socket === undefined || !this.connected) return false;
    return this.rawWrite(this.socket, frame);
  }

  /** Sends wait: a hold is running, or its probe has not been answered yet. */
  private get held(): boolean {
    return this.probe !== undefined || performance.now() < this.heldUntil;
  }

  private writeSend(pending: PendingSend): void {
    if (this.held && pending.requestId !== this.probe) {
      pending.waiting = true;
      return;
    }
    pending.waiting = !this.write(pending.frame);
    if (!pending.waiting) pending.attempts += 1;
  }

  private hold(delayMs: number): void {
    const until = performance.now() + delayMs;
    if (until <= this.heldUntil) return; // a hold only ever extends
    this.heldUntil = until;
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer);
    this.holdTimer = setTimeout(() => this.releaseHold(), delayMs);
  }

  /** The hold is over: the oldest waiting send goes alone (the probe), the others after its answer. */
  private releaseHold(): void {
    this.holdTimer = undefined;
    this.heldUntil = 0; // timers may fire a little before the clock reaches the end
    this.nextProbe();
  }

  /** The oldest waiting send goes alone; nothing else is written until it is answered. */
  private nextProbe(): void {
    const probe = [...this.pending.values()].find((p) => p.waiting);
    if (probe === undefined) return;
    this.probe = probe.requestId;
    this.writeSend(probe); // if disconnected, the next welcome writes it (and only it)
  }

  /**
   * A send is acked or failed for good: if it was the probe, the next oldest waiting send goes as
   * the next probe. The backlog drains one send at a time, each once the previous was answered,
   * never as a burst the gateway must admit or refuse at once (as the Python SDK does).
   */
  private settled(requestId: string): void {
    if (requestId !== this.probe) return;
    this.probe = undefined;
    if (performance.now() < this.heldUntil) return; // a new hold runs: its end sends the next probe
    this.nextProbe();
  }

  private dispatch(frame: ConnectResponse): void {
    const f = frame.frame;
    switch (f.case) {
      case "message":
        this.release(this.order.offer(f.value.conversationId, Number(f.value.seq), f.value));
        break;
      case "sendAck":
        this.onSendAck(f.value);
        break;
      case "error":
        this.onError(fromErrorFrame(f.value));
        break;
      case "syncComplete": {
        const cursors: Record<string, number> = {};
        for (const c of f.value.cursors) cursors[c.conversationId] = Number(c.seq);
        for (const [c, s] of Object.entries(cursors)) this.release(this.order.setBaseline(c, s));
        this.backoff.reset();
        this.emit("syncComplete", cursors);
        this.setState("synced");
        if (!this.synced) {
          this.synced = true;
          for (const waiter of this.syncedWaiters.splice(0)) waiter.resolve();
        }
        break;
      }
      case "receipt":
        this.emit("receipt", f.value);
        break;
      case "typing":
        this.emit("typing", f.value);
        break;
      case "presence":
        this.emit("presence", f.value);
        break;
      default:
        break; // pong proves liveness (lastRx); anything else is ignored
    }
  }

  private onSendAck(ack: SendAck): void {
    const requestId = this.pendingByKey.get(`${ack.conversationId}\u0000${ack.clientMessageId}`);
    if (requestId !== undefined) this.popPending(requestId)?.resolve(ack);
    this.emit("sendAck", ack);
    if (ack.seq > 0n) {
      // The server does not echo our own message to this session, so its seq must not look like
      // a gap. It may overtake the delivery of an earlier seq: never an anchor.
      const own: OwnSent = { own: true, conversationId: ack.conversationId, seq: Number(ack.seq) };
      this.release(this.order.offer(ack.conversationId, own.seq, own, false));
    }
  }

  private onError(error: ParleyError): void {
    const pending = error.requestId ? this.pending.get(error.requestId) : undefined;
    if (pending === undefined) {
      this.emit("error", error);
      return;
    }
    // Being shed (OVERLOADED), a timeout or an outage is the server's problem: resend the
    // same client_message_id after its hint, with jitter so shed clients do not return at once.
    // The whole outbox waits, not just this send: sends written meanwhile would meet the same
    // refusal (each costing the server one) or be stored ahead of this one, out of send order.
    // When the hold ends the oldest waiting send goes alone and each of the rest follows the
    // previous one's ack, so a client still refused costs one refusal per hold.
    const retryable = error.transient || (this.options.retryRateLimited && error.code === ErrorCode.RATE_LIMITED);
    if (retryable && pending.attempts < this.options.sendRetries) {
      pending.waiting = true;
      if (this.probe === pending.requestId) this.probe = undefined; // refused again: the next probe is the oldest again
      this.hold(retryDelayMs(pending.attempts, error.retryAfterMs ?? 0));
      return;
    }
    this.popPending(pending.requestId)?.reject(error);
  }

  private release(items: Held[]): void {
    for (const item of items) {
      if ("own" in item) {
        // Our own send passes the position in turn, without reaching the listeners.
        this.enqueue(async () => {
          if (this.options.ackMode === "auto") await this.commit(item.conversationId, item.seq);
        });
        continue;
      }
      const event: MessageEvent = {
        conversationId: item.conversationId,
        seq: Number(item.seq),
        senderId: item.senderId,
        text: decoder.decode(item.body),
        message: item,
      };
      this.emit("message", event, async () => {
        if (this.options.ackMode === "auto") await this.commit(event.conversationId, event.seq);
      });
    }
  }

  // ---- pending sends ------------------------------------------------------------------------

  private popPending(requestId: string): PendingSend | undefined {
    const pending = this.pending.get(requestId);
    if (pending === undefined) return undefined;
    this.pending.delete(requestId);
    this.pendingByKey.delete(pending.key);
    this.settled(requestId);
    return pending;
  }

  private dropPending(requestId: string): void {
    this.popPending(requestId);
  }

  /** Ends the session: fails waiting sends and sync waiters, stops reconnecting. */
  private end(failure: ParleyError): void {
    if (this.closed) return;
    this.closed = true;
    if (!(failure instanceof SessionClosedError)) this.failure = failure;
    this.probe = undefined;
    this.heldUntil = 0;
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    for (const requestId of [...this.pending.keys()]) this.popPending(requestId)?.reject(failure);
    for (const waiter of this.syncedWaiters.splice(0)) waiter.reject(failure);
    if (this.ackTimer !== undefined) clearTimeout(this.ackTimer);
    this.finishCurrent?.({ reason: failure.message });
    this.wake?.();
    this.setState("closed", { reason: failure.message, ...(failure instanceof SessionClosedError ? {} : { error: failure }) });
  }
}

function readFrame(conversationId: string, seq: number): ConnectRequest {
  return create(ConnectRequestSchema, { frame: { case: "read", value: { conversationId, seq: BigInt(seq) } } });
}
