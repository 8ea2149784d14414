package chat.parley.client

import chat.parley.v1.Error as ErrorFrame
import chat.parley.v1.ErrorCode
import io.grpc.Metadata
import io.grpc.Status
import io.grpc.StatusException
import io.grpc.StatusRuntimeException
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.nanoseconds
import kotlin.time.Duration.Companion.seconds

/**
 * A failure the server reported, as the status of a unary call or as an `Error` frame on the
 * session stream, with the client-visible [code], the gRPC [status] and, when the server gave
 * one, how long to wait before retrying. Catch a subclass (`catch (e: PermissionDeniedException)`)
 * or look at [code].
 */
open class ParleyException(
    message: String,
    val code: ErrorCode,
    val status: Status.Code,
    /** How long to wait before retrying (rate limiting, shedding); null when the server gave no hint. */
    val retryAfter: Duration? = null,
    /** The request_id of the stream frame that failed ("" for unary calls). */
    val requestId: String = "",
    cause: Throwable? = null,
) : Exception(message, cause) {
    /** Whether the same request may succeed later. */
    val retryable: Boolean
        get() = status == Status.Code.UNAVAILABLE ||
            status == Status.Code.DEADLINE_EXCEEDED ||
            status == Status.Code.RESOURCE_EXHAUSTED

    override fun toString(): String = "${javaClass.simpleName}($status, $code: $message)"
}

/** Missing, malformed or expired token. */
class UnauthenticatedException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** The caller is not a member of the conversation (or it does not exist: the same answer). */
class PermissionDeniedException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** A request field (or the message body) is invalid; the same request fails again. */
class InvalidArgumentException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** No such conversation. */
class NotFoundException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** Not allowed in the current state (e.g. adding members to a direct conversation). */
class FailedPreconditionException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** Too many requests (the per-user rate limit); [retryAfter] says how long to wait. */
open class RateLimitedException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** The server shed the request before doing any work (`ERROR_CODE_OVERLOADED`); safe to retry after [retryAfter]. */
class OverloadedException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    RateLimitedException(m, c, s, r, id, cause)

/** The server or one of its dependencies is down; safe to retry. */
open class UnavailableException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** The call took longer than its deadline; it may or may not have taken effect (retry with the same id). */
class DeadlineExceededException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    UnavailableException(m, c, s, r, id, cause)

/** Unexpected server failure. */
class InternalException(m: String, c: ErrorCode, s: Status.Code, r: Duration?, id: String, cause: Throwable?) :
    ParleyException(m, c, s, r, id, cause)

/** The session was closed (by the application) before the operation completed. */
class SessionClosedException(message: String = "session closed") : IllegalStateException(message)

/**
 * A session send got no acknowledgement in time. The message may still have been stored:
 * send again with the same [clientMessageId] to get its seq without creating a duplicate.
 */
class SendTimeoutException(val conversationId: String, val clientMessageId: String, timeout: Duration) :
    Exception("no acknowledgement for '$clientMessageId' in '$conversationId' after $timeout")

/** Maps what the server reports to the typed exceptions above (one table, as the server's). */
object ParleyErrors {
    /** Trailing metadata carrying the ErrorCode's enum name on every failed unary call. */
    val ERROR_CODE_KEY: Metadata.Key<String> = Metadata.Key.of("parley-error-code", Metadata.ASCII_STRING_MARSHALLER)

    /** Trailing metadata carrying the retry-after hint in milliseconds. */
    val RETRY_AFTER_KEY: Metadata.Key<String> = Metadata.Key.of("parley-retry-after-ms", Metadata.ASCII_STRING_MARSHALLER)

    private val statusByCode: Map<ErrorCode, Status.Code> = mapOf(
        ErrorCode.ERROR_CODE_UNAUTHENTICATED to Status.Code.UNAUTHENTICATED,
        ErrorCode.ERROR_CODE_NOT_A_MEMBER to Status.Code.PERMISSION_DENIED,
        ErrorCode.ERROR_CODE_INVALID_ARGUMENT to Status.Code.INVALID_ARGUMENT,
        ErrorCode.ERROR_CODE_BODY_TOO_LARGE to Status.Code.INVALID_ARGUMENT,
        ErrorCode.ERROR_CODE_BODY_EMPTY to Status.Code.INVALID_ARGUMENT,
        ErrorCode.ERROR_CODE_BODY_NOT_UTF8 to Status.Code.INVALID_ARGUMENT,
        ErrorCode.ERROR_CODE_RATE_LIMITED to Status.Code.RESOURCE_EXHAUSTED,
        ErrorCode.ERROR_CODE_CONVERSATION_NOT_FOUND to Status.Code.NOT_FOUND,
        ErrorCode.ERROR_CODE_FAILED_PRECONDITION to Status.Code.FAILED_PRECONDITION,
        ErrorCode.ERROR_CODE_HELLO_REQUIRED to Status.Code.FAILED_PRECONDITION,
        ErrorCode.ERROR_CODE_TOO_MANY_SESSIONS to Status.Code.RESOURCE_EXHAUSTED,
        ErrorCode.ERROR_CODE_SLOW_CONSUMER to Status.Code.RESOURCE_EXHAUSTED,
        ErrorCode.ERROR_CODE_UNAVAILABLE to Status.Code.UNAVAILABLE,
        ErrorCode.ERROR_CODE_INTERNAL to Status.Code.INTERNAL,
        ErrorCode.ERROR_CODE_OVERLOADED to Status.Code.RESOURCE_EXHAUSTED,
        ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED to Status.Code.DEADLINE_EXCEEDED,
    )

    // For failures without a Parley error code (transport errors, proxies, other servers).
    private val codeByStatus: Map<Status.Code, ErrorCode> = mapOf(
        Status.Code.UNAUTHENTICATED to ErrorCode.ERROR_CODE_UNAUTHENTICATED,
        Status.Code.PERMISSION_DENIED to ErrorCode.ERROR_CODE_NOT_A_MEMBER,
        Status.Code.INVALID_ARGUMENT to ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
        Status.Code.NOT_FOUND to ErrorCode.ERROR_CODE_CONVERSATION_NOT_FOUND,
        Status.Code.FAILED_PRECONDITION to ErrorCode.ERROR_CODE_FAILED_PRECONDITION,
        Status.Code.RESOURCE_EXHAUSTED to ErrorCode.ERROR_CODE_RATE_LIMITED,
        Status.Code.UNAVAILABLE to ErrorCode.ERROR_CODE_UNAVAILABLE,
        Status.Code.DEADLINE_EXCEEDED to ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED,
    )

    /** The typed exception for a failed call: its status plus the `parley-error-code` trailer. */
    fun fromStatus(status: Status, trailers: Metadata?, cause: Throwable? = null): ParleyException {
        val code = trailers?.get(ERROR_CODE_KEY)?.let { name ->
            // A code newer than this SDK stays UNSPECIFIED (then derived from the status).
            runCatching { ErrorCode.valueOf(name) }.getOrNull()
        } ?: ErrorCode.ERROR_CODE_UNSPECIFIED
        val retryAfter = trailers?.get(RETRY_AFTER_KEY)?.toDoubleOrNull()?.coerceAtLeast(0.0)?.milliseconds
        val message = status.description ?: status.code.name.lowercase()
        return make(message, code, status.code, retryAfter, "", cause ?: status.cause)
    }

    /** [fromStatus] for the exceptions grpc-java and grpc-kotlin throw; anything else is null. */
    fun fromThrowable(t: Throwable): ParleyException? = when (t) {
        is ParleyException -> t
        is StatusException -> fromStatus(t.status, t.trailers, t)
        is StatusRuntimeException -> fromStatus(t.status, t.trailers, t)
        else -> null
    }

    /** The typed exception for an `Error` frame received on the session stream. */
    fun fromErrorFrame(frame: ErrorFrame): ParleyException {
        var status = Status.fromCodeValue(frame.grpcStatus).code
        if (status == Status.Code.OK || status == Status.Code.UNKNOWN) {
            // A frame without a (valid) status: derive it from the error code.
            status = statusByCode[frame.code] ?: Status.Code.UNKNOWN
        }
        val retryAfter = if (frame.hasRetryAfter()) {
            frame.retryAfter.seconds.seconds + frame.retryAfter.nanos.nanoseconds
        } else {
            null
        }
        val message = frame.message.ifEmpty { if (frame.code == ErrorCode.UNRECOGNIZED) "error" else frame.code.name }
        val code = if (frame.code == ErrorCode.UNRECOGNIZED) ErrorCode.ERROR_CODE_UNSPECIFIED else frame.code
        return make(message, code, status, retryAfter, frame.requestId, null)
    }

    private fun make(
        message: String,
        code: ErrorCode,
        status: Status.Code,
        retryAfter: Duration?,
        requestId: String,
        cause: Throwable?,
    ): ParleyException {
        var effective = code
        if (effective == ErrorCode.ERROR_CODE_UNSPECIFIED) {
            effective = codeByStatus[status] ?: ErrorCode.ERROR_CODE_INTERNAL
        }
        val m = message
        val r = retryAfter
        return when {
            status == Status.Code.DEADLINE_EXCEEDED -> DeadlineExceededException(m, effective, status, r, requestId, cause)
            code == ErrorCode.ERROR_CODE_UNSPECIFIED && status !in codeByStatus ->
                InternalException(m, effective, status, r, requestId, cause)
            else -> when (effective) {
                ErrorCode.ERROR_CODE_UNAUTHENTICATED -> UnauthenticatedException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_NOT_A_MEMBER -> PermissionDeniedException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
                ErrorCode.ERROR_CODE_BODY_TOO_LARGE,
                ErrorCode.ERROR_CODE_BODY_EMPTY,
                ErrorCode.ERROR_CODE_BODY_NOT_UTF8,
                -> InvalidArgumentException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_CONVERSATION_NOT_FOUND -> NotFoundException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_FAILED_PRECONDITION,
                ErrorCode.ERROR_CODE_HELLO_REQUIRED,
                -> FailedPreconditionException(m, effective, status, r, requestId, cause)
                // TOO_MANY_SESSIONS and SLOW_CONSUMER end a session with RESOURCE_EXHAUSTED; the
                // session reconnects after a backoff and resumes from its cursors.
                ErrorCode.ERROR_CODE_RATE_LIMITED,
                ErrorCode.ERROR_CODE_TOO_MANY_SESSIONS,
                ErrorCode.ERROR_CODE_SLOW_CONSUMER,
                -> RateLimitedException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_OVERLOADED -> OverloadedException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_UNAVAILABLE -> UnavailableException(m, effective, status, r, requestId, cause)
                ErrorCode.ERROR_CODE_DEADLINE_EXCEEDED -> DeadlineExceededException(m, effective, status, r, requestId, cause)
                else -> InternalException(m, effective, status, r, requestId, cause)
            }
        }
    }
}
