export { Backoff, type BackoffOptions } from "./backoff.js";
export { ParleyClient, type ClientOptions, type HistoryPage, type SessionStartOptions } from "./client.js";
export { type CursorStore, type KeyValueStorage, MemoryCursorStore, WebStorageCursorStore } from "./cursors.js";
export { GrpcStatus, ParleyError, SendTimeoutError, SessionClosedError } from "./errors.js";
export type { ConnectionState, Listener, MessageEvent, SessionEvents, StateEvent } from "./events.js";
export { ErrorCode } from "./gen/parley/v1/errors_pb.js";
export {
  type Conversation,
  ConversationKind,
  type ConversationSummary,
  type Message,
  type Presence,
  PresenceStatus,
  type Receipt,
  ReceiptKind,
  type SendAck,
  type Typing,
} from "./gen/parley/v1/messages_pb.js";
export { OrderBuffer } from "./ordering.js";
export { type Encoding, Session, type SessionOptions, type TokenProvider, type TokenRequest, newClientMessageId } from "./session.js";
export { type NodeSocketOptions, type SocketLike, type WebSocketFactory, globalWebSocketFactory, nodeWebSocketFactory } from "./transport.js";
