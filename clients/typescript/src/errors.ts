import { ErrorCode } from "./gen/parley/v1/errors_pb.js";
import type { Error as ErrorFrame } from "./gen/parley/v1/messages_pb.js";

/** gRPC status codes the server reports in error frames (`grpc_status`). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** A failure reported by the server (an `error` frame or a call's error), or by the SDK itself. */
export class ParleyError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode,
    readonly grpcStatus: number,
    /** When the server says when to retry (rate limits, overload, slow consumer). */
    readonly retryAfterMs: number | undefined = undefined,
    readonly requestId = "",
  ) {
    super(message);
    this.name = "ParleyError";
  }

  get codeName(): string {
    return `ERROR_CODE_${ErrorCode[this.code] ?? "UNSPECIFIED"}`;
  }

  /** A retry of the same request (same client_message_id) may succeed. */
  get transient(): boolean {
    return (
      this.grpcStatus === GrpcStatus.UNAVAILABLE ||
      this.grpcStatus === GrpcStatus.DEADLINE_EXCEEDED ||
      this.code === ErrorCode.OVERLOADED
    );
  }
}

export function fromErrorFrame(frame: ErrorFrame): ParleyError {
  const retry = frame.retryAfter;
  const retryAfterMs = retry ? Number(retry.seconds) * 1000 + Math.floor(retry.nanos / 1e6) : undefined;
  return new ParleyError(frame.message, frame.code, frame.grpcStatus, retryAfterMs, frame.requestId);
}

/** The session was closed by the application, or ended for good. */
export class SessionClosedError extends ParleyError {
  constructor(message = "session closed") {
    super(message, ErrorCode.UNSPECIFIED, GrpcStatus.CANCELLED);
    this.name = "SessionClosedError";
  }
}

/** A send got no ack within its timeout (it may still have been stored: retry with the same client_message_id). */
export class SendTimeoutError extends ParleyError {
  constructor(readonly conversationId: string, readonly clientMessageId: string, timeoutMs: number) {
    super(`no ack for ${clientMessageId} in ${conversationId} within ${timeoutMs} ms`, ErrorCode.DEADLINE_EXCEEDED, GrpcStatus.DEADLINE_EXCEEDED);
    this.name = "SendTimeoutError";
  }
}

/**
 * WebSocket close codes of the bridge as gRPC statuses: the server's one error table
 * (services/parley/errors.py ERROR_TABLE, docs/PROTOCOL.md). A unit test checks they agree.
 */
export function statusOfCloseCode(code: number): number {
  switch (code) {
    case 4000:
      return GrpcStatus.INVALID_ARGUMENT;
    case 4001:
      return GrpcStatus.UNAUTHENTICATED;
    case 4003:
      return GrpcStatus.PERMISSION_DENIED;
    case 4004:
      return GrpcStatus.NOT_FOUND;
    case 4009:
      return GrpcStatus.FAILED_PRECONDITION;
    case 4029:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 1011:
      return GrpcStatus.INTERNAL;
    case 1013:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNAVAILABLE;
  }
}

/** Failures that reconnecting with the same hello cannot fix. */
export function isFatalStatus(status: number): boolean {
  return (
    status === GrpcStatus.PERMISSION_DENIED ||
    status === GrpcStatus.INVALID_ARGUMENT ||
    status === GrpcStatus.FAILED_PRECONDITION ||
    status === GrpcStatus.UNIMPLEMENTED
  );
}
