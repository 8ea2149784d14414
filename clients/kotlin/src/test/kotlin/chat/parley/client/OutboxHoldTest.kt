package chat.parley.client

import chat.parley.v1.ChatServiceGrpcKt
import chat.parley.v1.ChatServiceGrpcKt.ChatServiceCoroutineStub
import chat.parley.v1.ConnectRequest
import chat.parley.v1.ConnectResponse
import chat.parley.v1.Error
import chat.parley.v1.ErrorCode
import chat.parley.v1.SendAck
import chat.parley.v1.Typing
import chat.parley.v1.Welcome
import io.grpc.ManagedChannelBuilder
import io.grpc.Metadata
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder
import java.net.InetSocketAddress
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test

/** The session's outbox against a fake gateway (in this process, no stack): what is written, when. */
class OutboxHoldTest {
    /** Answers hello with a welcome, logs the sends (by client_message_id) and read markers it gets. */
    private class FakeGateway : ChatServiceGrpcKt.ChatServiceCoroutineImplBase() {
        val log = CopyOnWriteArrayList<String>()
        val sends = CopyOnWriteArrayList<ConnectRequest>()
        val toClient = Channel<ConnectResponse>(Channel.UNLIMITED)

        override fun connect(requests: Flow<ConnectRequest>): Flow<ConnectResponse> = channelFlow {
            val forward = launch { for (frame in toClient) send(frame) }
            requests.collect { request ->
                when (request.frameCase) {
                    ConnectRequest.FrameCase.HELLO -> send(
                        ConnectResponse.newBuilder()
                            .setWelcome(Welcome.newBuilder().setSessionId("fake").setUserId("u1"))
                            .build(),
                    )
                    ConnectRequest.FrameCase.SEND -> {
                        sends += request
                        log += request.send.clientMessageId
                    }
                    ConnectRequest.FrameCase.READ -> log += "read ${request.read.seq}"
                    else -> Unit
                }
            }
            forward.cancel() // the client half-closed: end the stream
        }
    }

    private suspend fun until(what: String, condition: () -> Boolean) {
        withTimeout(10.seconds) { while (!condition()) delay(5) }.also { check(condition()) { what } }
    }

    private fun ack(clientMessageId: String, seq: Long): ConnectResponse = ConnectResponse.newBuilder()
        .setSendAck(SendAck.newBuilder().setConversationId("c1").setClientMessageId(clientMessageId).setSeq(seq))
        .build()

    @Test
    fun `a shed send holds later sends, which follow it in order, one at a time, after its probe is acked`() = runBlocking {
        val gateway = FakeGateway()
        val server = NettyServerBuilder.forAddress(InetSocketAddress("127.0.0.1", 0)).addService(gateway).build().start()
        val channel = ManagedChannelBuilder.forAddress("127.0.0.1", server.port).usePlaintext().build()
        try {
            withTimeout(30.seconds) {
                val session = ParleySession(ChatServiceCoroutineStub(channel), { Metadata() }, "d1", SessionOptions())
                session.start()
                val events = EventCollector(this, session)
                events.next<ParleyEvent.Connected>()

                val first = async { session.send("c1", "one", "cm-1") }
                until("cm-1 written") { "cm-1" in gateway.log }
                gateway.log += "shed cm-1"
                val shedAt = TimeSource.Monotonic.markNow()
                val shed = Error.newBuilder()
                    .setRequestId(gateway.sends.first().requestId)
                    .setCode(ErrorCode.ERROR_CODE_OVERLOADED)
                    .setGrpcStatus(io.grpc.Status.Code.RESOURCE_EXHAUSTED.value())
                    .setMessage("at capacity")
                    .setRetryAfter(com.google.protobuf.Duration.newBuilder().setNanos(200_000_000))
                gateway.toClient.send(ConnectResponse.newBuilder().setError(shed).build())
                // Frames are handled in order: once this one is seen, the session knows cm-1 was shed.
                val typing = Typing.newBuilder().setConversationId("c1").setUserId("u2").setTyping(true)
                gateway.toClient.send(ConnectResponse.newBuilder().setTyping(typing).build())
                events.next<ParleyEvent.TypingChanged>()

                // Sent during the hold: they wait instead of meeting the same refusal or overtaking cm-1.
                val later = listOf("cm-2" to "two", "cm-3" to "three").map { (id, text) ->
                    async(start = CoroutineStart.UNDISPATCHED) { session.send("c1", text, id) }
                }
                // When the hold ends the oldest goes alone (the probe). A read marker written now
                // reaches the gateway after anything written before it on the stream: nothing was.
                until("the probe") { gateway.log.count { it == "cm-1" } == 2 }
                assertTrue(shedAt.elapsedNow() >= 190.milliseconds, "the probe waited for the retry-after")
                session.markRead("c1", 1)
                until("the read marker") { "read 1" in gateway.log }
                assertEquals(listOf("cm-1", "shed cm-1", "cm-1", "read 1"), gateway.log.toList())

                // The rest follow its ack one at a time, each after the previous one's ack, in send
                // order: a read marker written once cm-2 is out arrives before anything else.
                gateway.log += "ack cm-1"
                gateway.toClient.send(ack("cm-1", 1))
                until("the next waiting send") { "cm-2" in gateway.log }
                session.markRead("c1", 2)
                until("the second read marker") { "read 2" in gateway.log }
                assertEquals(listOf("cm-1", "shed cm-1", "cm-1", "read 1", "ack cm-1", "cm-2", "read 2"), gateway.log.toList())
                gateway.log += "ack cm-2"
                gateway.toClient.send(ack("cm-2", 2))
                until("the last waiting send") { "cm-3" in gateway.log }
                assertEquals(
                    listOf("cm-1", "shed cm-1", "cm-1", "read 1", "ack cm-1", "cm-2", "read 2", "ack cm-2", "cm-3"),
                    gateway.log.toList(),
                )
                gateway.toClient.send(ack("cm-3", 3))
                assertEquals(listOf(1L, 2L, 3L), (listOf(first) + later).awaitAll().map { it.seq })
                session.close()
                events.job.join()
            }
        } finally {
            channel.shutdownNow()
            server.shutdownNow()
        }
    }
}
