package chat.parley.client

import chat.parley.v1.Error as ErrorFrame
import chat.parley.v1.ErrorCode
import com.google.protobuf.Duration as ProtoDuration
import io.grpc.Metadata
import io.grpc.Status
import io.grpc.StatusException
import kotlin.test.assertEquals
import kotlin.test.assertIs
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.milliseconds
import org.junit.jupiter.api.Test

class ErrorsTest {
    private fun trailers(code: String?, retryMs: String? = null) = Metadata().apply {
        code?.let { put(ParleyErrors.ERROR_CODE_KEY, it) }
        retryMs?.let { put(ParleyErrors.RETRY_AFTER_KEY, it) }
    }

    @Test
    fun `a unary failure maps to its class by the error code trailer`() {
        val e = ParleyErrors.fromThrowable(
            StatusException(Status.PERMISSION_DENIED.withDescription("not a member"), trailers("ERROR_CODE_NOT_A_MEMBER")),
        )
        assertIs<PermissionDeniedException>(e)
        assertEquals(ErrorCode.ERROR_CODE_NOT_A_MEMBER, e.code)
        assertEquals("not a member", e.message)
    }

    @Test
    fun `shedding carries its retry-after and is retryable`() {
        val e = ParleyErrors.fromStatus(Status.RESOURCE_EXHAUSTED, trailers("ERROR_CODE_OVERLOADED", "250"))
        assertIs<OverloadedException>(e)
        assertEquals(250.milliseconds, e.retryAfter)
        assertTrue(e.retryable)
    }

    @Test
    fun `a failure without a code is derived from its status, an unknown code too`() {
        assertIs<UnavailableException>(ParleyErrors.fromStatus(Status.UNAVAILABLE, null))
        val unknown = ParleyErrors.fromStatus(Status.NOT_FOUND, trailers("ERROR_CODE_FROM_THE_FUTURE"))
        assertIs<NotFoundException>(unknown)
        assertEquals(ErrorCode.ERROR_CODE_CONVERSATION_NOT_FOUND, unknown.code)
        assertIs<InternalException>(ParleyErrors.fromStatus(Status.DATA_LOSS, null))
        assertIs<DeadlineExceededException>(ParleyErrors.fromStatus(Status.DEADLINE_EXCEEDED, null))
    }

    @Test
    fun `an error frame keeps its request id, status and retry-after`() {
        val frame = ErrorFrame.newBuilder()
            .setRequestId("s1")
            .setCode(ErrorCode.ERROR_CODE_RATE_LIMITED)
            .setGrpcStatus(Status.Code.RESOURCE_EXHAUSTED.value())
            .setMessage("slow down")
            .setRetryAfter(ProtoDuration.newBuilder().setNanos(500_000_000))
            .build()
        val e = ParleyErrors.fromErrorFrame(frame)
        assertIs<RateLimitedException>(e)
        assertEquals("s1", e.requestId)
        assertEquals(500.milliseconds, e.retryAfter)
        val bare = ParleyErrors.fromErrorFrame(ErrorFrame.newBuilder().setCode(ErrorCode.ERROR_CODE_BODY_EMPTY).build())
        assertIs<InvalidArgumentException>(bare)
        assertEquals(Status.Code.INVALID_ARGUMENT, bare.status)
        assertNull(bare.retryAfter)
    }
}
