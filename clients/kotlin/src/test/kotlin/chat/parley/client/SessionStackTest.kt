package chat.parley.client

import chat.parley.v1.ErrorCode
import chat.parley.v1.PresenceStatus
import chat.parley.v1.ReceiptKind
import java.util.UUID
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test

/** The SDK against the real local stack (gateway, router, presence, history, Redis, Cassandra). */
class SessionStackTest {
    private lateinit var gateway: String

    @BeforeEach
    fun stack() {
        gateway = TestStack.requireStack()
    }

    private fun test(block: suspend CoroutineScope.() -> Unit) = runBlocking { withTimeout(90.seconds) { block() } }

    private suspend fun CoroutineScope.started(
        client: ParleyClient,
        options: SessionOptions = SessionOptions(),
    ): Pair<ParleySession, EventCollector> {
        val session = client.session(options)
        session.start()
        val events = EventCollector(this, session)
        session.awaitSynced()
        return session to events
    }

    @Test
    fun `two users chat in order, with delivery and read receipts`() = test {
        val alice = TestStack.user("alice")
        val bob = TestStack.user("bob")
        TestStack.client(alice).use { aliceClient ->
            TestStack.client(bob).use { bobClient ->
                val conversation = aliceClient.createDirect(bob)
                val (bobSession, bobEvents) = started(bobClient)
                val (aliceSession, aliceEvents) = started(aliceClient)

                val acks = (1..20).map { aliceSession.send(conversation.id, "m$it") }
                assertEquals((1L..20L).toList(), acks.map { it.seq })
                val received = bobEvents.messages(20)
                assertEquals((1..20).map { "m$it" }, received.map { it.text })
                assertEquals((1L..20L).toList(), received.map { it.seq })
                assertTrue(received.all { it.senderId == alice && it.conversationId == conversation.id })

                val reply = bobSession.send(conversation.id, "hi alice")
                assertEquals(21L, reply.seq)
                val back = aliceEvents.next<ParleyEvent.MessageReceived>()
                assertEquals("hi alice" to 21L, back.text to back.seq)

                // Bob's session acked what its collector processed; then he reads it.
                aliceEvents.next<ParleyEvent.ReceiptReceived> {
                    it.receipt.userId == bob && it.receipt.kind == ReceiptKind.RECEIPT_KIND_DELIVERED && it.receipt.seq >= 20L
                }
                bobSession.markRead(conversation.id, 20)
                aliceEvents.next<ParleyEvent.ReceiptReceived> {
                    it.receipt.userId == bob && it.receipt.kind == ReceiptKind.RECEIPT_KIND_READ && it.receipt.seq == 20L
                }
                // His own reply (21) moved his position too: it is his, nothing to receive.
                assertEquals(21L, bobSession.cursors()[conversation.id])

                aliceSession.close()
                bobSession.close()
                aliceEvents.job.join() // the flow completes after close()
                assertIs<ConnectionState.Closed>(aliceSession.state.value)
            }
        }
    }

    @Test
    fun `the same client_message_id gets the same seq, on the stream and unary`() = test {
        val alice = TestStack.user("alice")
        val bob = TestStack.user("bob")
        TestStack.client(alice).use { client ->
            val conversation = client.createDirect(bob)
            val (session, _) = started(client)
            val id = "kt-${UUID.randomUUID()}"
            val first = session.send(conversation.id, "once", clientMessageId = id)
            val again = session.send(conversation.id, "once", clientMessageId = id)
            val unary = client.send(conversation.id, "once", clientMessageId = id)
            assertEquals(first.seq, again.seq)
            assertEquals(first.seq, unary.seq)
            assertTrue(!first.duplicate && again.duplicate && unary.duplicate)

            // Concurrent callers with one id join one send.
            val other = "kt-${UUID.randomUUID()}"
            val joined = List(5) { async { session.send(conversation.id, "joined", clientMessageId = other) } }.awaitAll()
            assertEquals(1, joined.map { it.seq }.toSet().size)

            val history = client.getHistory(conversation.id, afterSeq = 0, limit = 50).messages
            assertEquals(1, history.count { it.clientMessageId == id })
            assertEquals(1, history.count { it.clientMessageId == other })
            session.close()
        }
    }

    @Test
    fun `a broken connection is resumed with no loss and no duplicate`() = test {
        val alice = TestStack.user("alice")
        val bob = TestStack.user("bob")
        TcpProxy(TcpProxy.parse(gateway)).use { proxy ->
            val tokens = AtomicInteger()
            TestStack.client(alice).use { aliceClient ->
                TestStack.client(bob, target = proxy.address) {
                    tokenProvider = { tokens.incrementAndGet(); TestStack.token(bob) }
                }.use { bobClient ->
                    val conversation = aliceClient.createDirect(bob)
                    val fast = Backoff(initial = 50.seconds / 1000, maximum = 1.seconds)
                    val (bobSession, bobEvents) = started(bobClient, SessionOptions(backoff = fast))
                    val connectsBefore = tokens.get()

                    // Bob sends through the breaks too: each of his sends must land exactly once.
                    val bobSends = async { (1..10).map { bobSession.send(conversation.id, "b$it") } }
                    for (i in 1..60) {
                        aliceClient.send(conversation.id, "a$i")
                        if (i % 15 == 0) proxy.breakAll()
                    }
                    val bobAcks = bobSends.await()
                    assertEquals(10, bobAcks.map { it.seq }.toSet().size)

                    // Alice's messages. Bob's own may come too: one sent on a connection that broke
                    // before its delivery reaches his next session like any other device's message.
                    val received = withTimeout(60.seconds) {
                        List(60) { bobEvents.next<ParleyEvent.MessageReceived>(60.seconds) { it.senderId == alice } }
                    }
                    assertEquals((1..60).map { "a$it" }, received.map { it.text })
                    assertEquals(received.map { it.seq }.sorted(), received.map { it.seq })
                    assertEquals(60, received.map { it.seq }.toSet().size)

                    assertTrue(bobEvents.seen.any { it is ParleyEvent.Disconnected }, "no disconnect seen")
                    assertTrue(bobEvents.seen.any { it is ParleyEvent.Connected && it.reconnects >= 1 })
                    assertTrue(tokens.get() > connectsBefore, "the token provider is asked again on reconnect")
                    assertTrue(proxy.accepted >= 2)

                    // The server holds every message once, without a gap.
                    val all = aliceClient.historyForward(conversation.id, pageSize = 100).toList().flatMap { it.messages }
                    assertEquals((1L..70L).toList(), all.map { it.seq })
                    assertEquals(70, all.map { it.clientMessageId }.toSet().size)
                    bobSession.close()
                }
            }
        }
    }

    @Test
    fun `a new session with the same cursor store resumes after what was processed`() = test {
        val alice = TestStack.user("alice")
        val bob = TestStack.user("bob")
        TestStack.client(alice).use { aliceClient ->
            TestStack.client(bob).use { bobClient ->
                val conversation = aliceClient.createDirect(bob)
                val store = InMemoryCursorStore()
                val (first, firstEvents) = started(bobClient, SessionOptions(cursorStore = store))
                for (i in 1..5) aliceClient.send(conversation.id, "x$i")
                assertEquals((1L..5L).toList(), firstEvents.messages(5).map { it.seq })
                first.close()
                firstEvents.job.join()
                assertEquals(5L, store.snapshot()[conversation.id])

                for (i in 6..8) aliceClient.send(conversation.id, "x$i")
                val (second, secondEvents) = started(bobClient, SessionOptions(cursorStore = store))
                assertEquals(listOf("x6", "x7", "x8"), secondEvents.messages(3).map { it.text })
                second.close()
                assertTrue(secondEvents.seen.filterIsInstance<ParleyEvent.MessageReceived>().none { it.seq <= 5 })
            }
        }
    }

    @Test
    fun `history pages back and forward`() = test {
        val alice = TestStack.user("alice")
        TestStack.client(alice).use { client ->
            val conversation = client.createDirect(TestStack.user("bob"))
            for (i in 1..25) client.send(conversation.id, "h$i")
            val newest = client.getHistory(conversation.id, limit = 10)
            assertEquals((16L..25L).toList(), newest.messages.map { it.seq })
            assertTrue(newest.hasMore)
            val before = client.getHistory(conversation.id, beforeSeq = newest.nextCursor, limit = 10)
            assertEquals((6L..15L).toList(), before.messages.map { it.seq })

            val back = client.historyBackward(conversation.id, pageSize = 10).toList()
            assertEquals(3, back.size)
            assertEquals((1L..25L).toList(), back.reversed().flatMap { it.messages }.map { it.seq })
            val forward = client.historyForward(conversation.id, pageSize = 10).toList()
            assertEquals((1..25).map { "h$it" }, forward.flatMap { it.messages }.map { it.body.toStringUtf8() })
            val summary = client.listConversations().first { it.conversation.id == conversation.id }
            assertEquals(25L, summary.lastSeq)
        }
    }

    @Test
    fun `presence goes online and offline, typing reaches the peer`() = test {
        val alice = TestStack.user("alice")
        val bob = TestStack.user("bob")
        TestStack.client(alice).use { aliceClient ->
            TestStack.client(bob).use { bobClient ->
                val conversation = aliceClient.createDirect(bob)
                val (bobSession, bobEvents) = started(bobClient, SessionOptions(subscribePresence = true))
                val (aliceSession, _) = started(aliceClient)
                bobEvents.next<ParleyEvent.PresenceChanged> {
                    it.presence.userId == alice && it.presence.status == PresenceStatus.PRESENCE_STATUS_ONLINE
                }
                assertEquals(PresenceStatus.PRESENCE_STATUS_ONLINE, bobClient.getPresence(listOf(alice)).single().status)

                assertTrue(aliceSession.typing(conversation.id, true))
                val typing = bobEvents.next<ParleyEvent.TypingChanged>().typing
                assertEquals(Triple(alice, conversation.id, true), Triple(typing.userId, typing.conversationId, typing.typing))

                aliceSession.close() // a goodbye: offline at once, without waiting for a lease
                bobEvents.next<ParleyEvent.PresenceChanged> {
                    it.presence.userId == alice && it.presence.status == PresenceStatus.PRESENCE_STATUS_OFFLINE
                }
                val seen = bobClient.getPresence(listOf(alice)).single()
                assertEquals(PresenceStatus.PRESENCE_STATUS_OFFLINE, seen.status)
                assertTrue(seen.hasLastSeen())
                bobSession.close()
            }
        }
    }

    @Test
    fun `errors are typed, and a failed send leaves the session open`() = test {
        val alice = TestStack.user("alice")
        val carol = TestStack.user("carol")
        TestStack.client(alice).use { aliceClient ->
            TestStack.client(carol).use { carolClient ->
                val conversation = aliceClient.createDirect(TestStack.user("bob"))
                val (carolSession, _) = started(carolClient)
                val denied = assertFailsWith<PermissionDeniedException> { carolSession.send(conversation.id, "let me in") }
                assertEquals(ErrorCode.ERROR_CODE_NOT_A_MEMBER, denied.code)
                assertIs<ConnectionState.Connected>(carolSession.state.value)
                val unary = assertFailsWith<PermissionDeniedException> { carolClient.getHistory(conversation.id) }
                assertEquals(ErrorCode.ERROR_CODE_NOT_A_MEMBER, unary.code)

                val (aliceSession, _) = started(aliceClient)
                val empty = assertFailsWith<InvalidArgumentException> { aliceSession.send(conversation.id, "") }
                assertEquals(ErrorCode.ERROR_CODE_BODY_EMPTY, empty.code)
                assertEquals(1L, aliceSession.send(conversation.id, "still open").seq)
                assertFailsWith<PermissionDeniedException> { carolClient.send(conversation.id, "unary") }
                carolSession.close()
                aliceSession.close()
            }
        }
    }

    @Test
    fun `a bad token ends the session with UnauthenticatedException`() = test {
        val mallory = TestStack.user("mallory")
        TestStack.client(mallory) { token(TestStack.token(mallory, secret = "not-the-secret")) }.use { client ->
            assertFailsWith<UnauthenticatedException> { client.createDirect("bob") }
            val session = client.session()
            session.start()
            assertFailsWith<UnauthenticatedException> { session.events.first() }
            assertIs<ConnectionState.Closed>(session.state.value)
            assertFailsWith<UnauthenticatedException> { session.send("d_000000000000000000000000", "x") }
        }
    }

    @Test
    fun `TLS verifies the gateway by default`() = test {
        // Without the development CA the gateway's certificate is not trusted: no call goes through.
        TestStack.client(TestStack.user("alice")) { caFile = null }.use { client ->
            val e = assertFailsWith<UnavailableException> { client.createDirect("bob") }
            assertTrue(e.cause?.toString().orEmpty().isNotEmpty())
        }
    }
}
