/**
 * Unary calls over the bridge (`/v1/call`): conversations, history, presence,
 * one-shot sends. One socket, opened when the first call needs it and again
 * after it breaks; answers are matched by request_id (they may come out of
 * order). A call answered UNAUTHENTICATED (the token expired while the socket
 * was open) is retried once on a new socket with a refreshed token; a call
 * whose socket broke is retried once if it is idempotent; an idempotent call
 * refused as overloaded, unavailable or rate limited is retried after the
 * server's retry-after with jittered backoff (a send is idempotent by its
 * client_message_id).
 */
import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { type BridgeRequest, BridgeRequestSchema, type BridgeResponse, BridgeResponseSchema } from "./gen/parley/v1/bridge_pb.js";
import { ErrorCode } from "./gen/parley/v1/errors_pb.js";
import { retryDelayMs } from "./backoff.js";
import { GrpcStatus, ParleyError, fromErrorFrame } from "./errors.js";
import type { TokenProvider } from "./session.js";
import { OPEN, SUBPROTOCOL, type SocketLike, type WebSocketFactory, toBytes } from "./transport.js";

export type CallCase = NonNullable<BridgeRequest["call"]["case"]>;
type CallInit = NonNullable<MessageInitShape<typeof BridgeRequestSchema>["call"]>;
type CallValue<K extends CallCase> = Extract<CallInit, { case: K }>["value"];
type ResultValue<K extends CallCase> = Extract<BridgeResponse["result"], { case: K }>["value"];

// Creating a group or changing members twice is not the same as once.
const NOT_IDEMPOTENT = new Set<CallCase>(["createGroup", "addMembers", "removeMembers"]);

interface Waiting {
  resolve: (response: BridgeResponse) => void;
  reject: (error: unknown) => void;
}

export class CallChannel {
  private socket: Promise<SocketLike> | undefined;
  private waiting = new Map<string, Waiting>();
  private nextId = 1;
  private refresh = false;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly token: TokenProvider,
    private readonly webSocket: WebSocketFactory,
    private readonly timeoutMs = 15_000,
    private readonly retries = 5,
  ) {}

  async call<K extends CallCase>(kind: K, value: CallValue<K>): Promise<ResultValue<K>> {
    let retriedAuth = false;
    let retriedTransport = false;
    let attempts = 0;
    for (;;) {
      let response: BridgeResponse;
      try {
        response = await this.roundTrip(kind, value);
      } catch (error) {
        const transport = error instanceof ParleyError && error.grpcStatus === GrpcStatus.UNAVAILABLE;
        if (transport && !retriedTransport && !NOT_IDEMPOTENT.has(kind) && !this.closed) {
          retriedTransport = true;
          continue;
        }
        throw error;
      }
      const result = response.result;
      if (result.case === "error") {
        const error = fromErrorFrame(result.value);
        if (error.grpcStatus === GrpcStatus.UNAUTHENTICATED && !retriedAuth) {
          retriedAuth = true;
          this.refresh = true;
          this.drop();
          continue;
        }
        const retryable = error.transient || error.code === ErrorCode.RATE_LIMITED;
        if (retryable && !NOT_IDEMPOTENT.has(kind) && attempts < this.retries && !this.closed) {
          await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempts, error.retryAfterMs ?? 0)));
          attempts += 1;
          continue;
        }
        throw error;
      }
      if (result.case !== kind) throw new ParleyError(`unexpected ${String(result.case)} answer to ${kind}`, ErrorCode.INTERNAL, GrpcStatus.INTERNAL);
      return result.value as ResultValue<K>;
    }
  }

  close(): void {
    this.closed = true;
    this.drop();
  }

  private async roundTrip(kind: CallCase, value: unknown): Promise<BridgeResponse> {
    if (this.closed) throw new ParleyError("client closed", ErrorCode.UNSPECIFIED, GrpcStatus.CANCELLED);
    const socket = await this.open();
    const requestId = `c${this.nextId++}`;
    const request = create(BridgeRequestSchema, { requestId, call: { case: kind, value } as CallInit });
    return new Promise<BridgeResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(requestId);
        reject(new ParleyError(`${kind}: no answer within ${this.timeoutMs} ms`, ErrorCode.DEADLINE_EXCEEDED, GrpcStatus.DEADLINE_EXCEEDED));
      }, this.timeoutMs);
      this.waiting.set(requestId, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      socket.send(toBinary(BridgeRequestSchema, request));
    });
  }

  private open(): Promise<SocketLike> {
    this.socket ??= (async () => {
      const token = await this.token({ refresh: this.refresh });
      this.refresh = false;
      const socket = this.webSocket(`${this.url}/v1/call`, [SUBPROTOCOL, `bearer.${token}`]);
      socket.binaryType = "arraybuffer";
      await new Promise<void>((resolve, reject) => {
        socket.onopen = () => resolve();
        socket.onerror = (event: unknown) => {
          const text = String((event as { message?: unknown })?.message ?? "");
          if (text.includes("401")) this.refresh = true;
          reject(new ParleyError(`call socket failed ${text}`.trim(), ErrorCode.UNAVAILABLE, GrpcStatus.UNAVAILABLE));
        };
        socket.onclose = () => reject(new ParleyError("call socket refused", ErrorCode.UNAVAILABLE, GrpcStatus.UNAVAILABLE));
      }).catch((error: unknown) => {
        this.socket = undefined;
        throw error;
      });
      socket.onmessage = (event) => {
        const bytes = toBytes(event.data);
        if (bytes === undefined) return;
        const response = fromBinary(BridgeResponseSchema, bytes);
        const waiting = this.waiting.get(response.requestId);
        this.waiting.delete(response.requestId);
        waiting?.resolve(response);
      };
      const broken = () => {
        if (this.socket === current) this.socket = undefined;
        this.failAll();
      };
      socket.onclose = broken;
      socket.onerror = broken;
      return socket;
    })();
    const current = this.socket;
    return current;
  }

  private drop(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.failAll();
    void socket?.then(
      (s) => {
        s.onclose = s.onerror = s.onmessage = null;
        if (s.readyState <= OPEN) s.close(1000);
      },
      () => undefined,
    );
  }

  private failAll(): void {
    for (const waiting of this.waiting.values()) {
      waiting.reject(new ParleyError("call socket closed", ErrorCode.UNAVAILABLE, GrpcStatus.UNAVAILABLE));
    }
    this.waiting.clear();
  }
}
