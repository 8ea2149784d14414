package chat.parley.client

import chat.parley.v1.AddMembersRequest
import chat.parley.v1.ChatServiceGrpcKt.ChatServiceCoroutineStub
import chat.parley.v1.Conversation
import chat.parley.v1.ConversationServiceGrpcKt.ConversationServiceCoroutineStub
import chat.parley.v1.ConversationSummary
import chat.parley.v1.CreateDirectRequest
import chat.parley.v1.CreateGroupRequest
import chat.parley.v1.GetConversationRequest
import chat.parley.v1.GetHistoryRequest
import chat.parley.v1.GetPresenceRequest
import chat.parley.v1.HistoryServiceGrpcKt.HistoryServiceCoroutineStub
import chat.parley.v1.ListConversationsRequest
import chat.parley.v1.Message
import chat.parley.v1.Presence
import chat.parley.v1.PresenceServiceGrpcKt.PresenceServiceCoroutineStub
import chat.parley.v1.RemoveMembersRequest
import chat.parley.v1.SendAck
import chat.parley.v1.SendRequest
import com.google.protobuf.ByteString
import io.grpc.ChannelCredentials
import io.grpc.Grpc
import io.grpc.InsecureChannelCredentials
import io.grpc.ManagedChannel
import io.grpc.Metadata
import io.grpc.TlsChannelCredentials
import io.grpc.kotlin.AbstractCoroutineStub
import java.io.Closeable
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.TimeUnit
import kotlin.random.Random
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow

/** One page of history, ascending seq. */
data class HistoryPage(
    val messages: List<Message>,
    /** Pass as beforeSeq (paging back) or afterSeq (paging forward); 0 when there is no further page. */
    val nextCursor: Long,
    val hasMore: Boolean,
)

/** How a [ParleyClient] connects. Set with the builder block of [ParleyClient]'s constructor. */
class ParleyClientConfig internal constructor() {
    /**
     * Returns the bearer token (a JWT whose `sub` is the user id). Called for every unary call and
     * on every (re)connect of a session, so it can refresh an expiring token.
     */
    var tokenProvider: (suspend () -> String)? = null

    /** Stable per installation in real apps; a random one resumes only within this process. */
    var deviceId: String = "dev-" + UUID.randomUUID().toString().replace("-", "").take(12)

    /** TLS is on and verifies the gateway's certificate unless this is set to false (plaintext). */
    var tls: Boolean = true

    /** PEM file of the CA to trust instead of the system's roots (a private deployment, the dev CA). */
    var caFile: Path? = null

    /** The name the certificate must carry, when it differs from the address dialled. */
    var serverName: String? = null

    /** Deadline of each unary call. */
    var callTimeout: Duration = 10.seconds

    /** Attempts of a unary [ParleyClient.send] that fails UNAVAILABLE or DEADLINE_EXCEEDED. */
    var sendAttempts: Int = 5

    /** Credentials of your own (mutual TLS, ...); overrides [tls], [caFile]. */
    var credentials: ChannelCredentials? = null

    fun token(token: String) {
        tokenProvider = { token }
    }
}

/**
 * The Parley client: the unary calls of the public API and real-time [session]s, over one gRPC
 * channel to a gateway.
 *
 * ```
 * val client = ParleyClient("chat.example.com:443") { tokenProvider = { auth.freshToken() } }
 * val conversation = client.createDirect("bob")
 * client.send(conversation.id, "hi")
 * ```
 *
 * The target is `host:port` (TLS), `https://host:port` (TLS) or `http://host:port` (plaintext).
 * Failures are thrown as [ParleyException] subclasses.
 */
class ParleyClient(target: String, configure: ParleyClientConfig.() -> Unit) : Closeable {
    private val config = ParleyClientConfig().apply(configure)
    private val tokenProvider: suspend () -> String =
        requireNotNull(config.tokenProvider) { "set tokenProvider (or call token(...)) in the ParleyClient block" }
    val deviceId: String = config.deviceId

    /** The underlying channel (for interceptors of your own, or to share with other stubs). */
    val channel: ManagedChannel = buildChannel(target, config)

    private val chat = ChatServiceCoroutineStub(channel)
    private val conversations = ConversationServiceCoroutineStub(channel)
    private val history = HistoryServiceCoroutineStub(channel)
    private val presence = PresenceServiceCoroutineStub(channel)

    /** Request metadata for one call: the bearer token, fetched now (so a provider can refresh it). */
    suspend fun metadata(): Metadata = Metadata().apply {
        put(AUTHORIZATION, "Bearer ${tokenProvider()}")
    }

    private suspend fun <S : AbstractCoroutineStub<S>, R> call(stub: S, block: suspend (S, Metadata) -> R): R {
        val headers = metadata()
        val bounded = stub.withDeadlineAfter(config.callTimeout.inWholeMilliseconds, TimeUnit.MILLISECONDS)
        try {
            return block(bounded, headers)
        } catch (e: Exception) {
            throw ParleyErrors.fromThrowable(e) ?: throw e
        }
    }

    // ---- conversations ------------------------------------------------------------------------

    /** Gets or creates the direct conversation with [peerUserId] (its id is deterministic). */
    suspend fun createDirect(peerUserId: String): Conversation = call(conversations) { s, h ->
        s.createDirect(CreateDirectRequest.newBuilder().setPeerUserId(peerUserId).build(), h).conversation
    }

    suspend fun createGroup(name: String, memberIds: Collection<String>): Conversation = call(conversations) { s, h ->
        s.createGroup(CreateGroupRequest.newBuilder().setName(name).addAllMemberIds(memberIds).build(), h).conversation
    }

    suspend fun addMembers(conversationId: String, userIds: Collection<String>): Conversation =
        call(conversations) { s, h ->
            val request = AddMembersRequest.newBuilder().setConversationId(conversationId).addAllUserIds(userIds)
            s.addMembers(request.build(), h).conversation
        }

    suspend fun removeMembers(conversationId: String, userIds: Collection<String>): Conversation =
        call(conversations) { s, h ->
            val request = RemoveMembersRequest.newBuilder().setConversationId(conversationId).addAllUserIds(userIds)
            s.removeMembers(request.build(), h).conversation
        }

    suspend fun getConversation(conversationId: String): Conversation = call(conversations) { s, h ->
        s.getConversation(GetConversationRequest.newBuilder().setConversationId(conversationId).build(), h)
            .conversation
    }

    /**
     * The caller's conversations, most recently active first (up to [limit]), with last message
     * and unread count. The server may cut a page short to stay under its response size limit;
     * pages are followed by next_page_token until [limit] is reached.
     */
    suspend fun listConversations(limit: Int = 50): List<ConversationSummary> {
        val out = ArrayList<ConversationSummary>()
        var token = ""
        while (out.size < limit) {
            val request = ListConversationsRequest.newBuilder()
                .setLimit(minOf(200, limit - out.size))
                .setPageToken(token)
                .build()
            val response = call(conversations) { s, h -> s.listConversations(request, h) }
            out += response.conversationsList
            if (response.nextPageToken.isEmpty() || response.nextPageToken == token) break
            token = response.nextPageToken
        }
        return out.take(limit)
    }

    // ---- history and presence -----------------------------------------------------------------

    /**
     * One page in ascending seq: the newest (neither cursor), the one before [beforeSeq], or the
     * one after [afterSeq] (`afterSeq = 0` pages forward from the first message).
     */
    suspend fun getHistory(
        conversationId: String,
        beforeSeq: Long? = null,
        afterSeq: Long? = null,
        limit: Int = 50,
    ): HistoryPage {
        require(beforeSeq == null || afterSeq == null) { "pass at most one of beforeSeq and afterSeq" }
        val request = GetHistoryRequest.newBuilder().setConversationId(conversationId).setLimit(limit)
        beforeSeq?.let { request.setBeforeSeq(it) }
        afterSeq?.let { request.setAfterSeq(it) }
        val response = call(history) { s, h -> s.getHistory(request.build(), h) }
        return HistoryPage(response.messagesList, response.nextCursor, response.hasMore)
    }

    /** Pages from the newest (or from before [beforeSeq]) back to the first message; each page ascending. */
    fun historyBackward(conversationId: String, beforeSeq: Long? = null, pageSize: Int = 200): Flow<HistoryPage> =
        flow {
            var cursor = beforeSeq
            while (true) {
                val page = getHistory(conversationId, beforeSeq = cursor, limit = pageSize)
                emit(page)
                if (!page.hasMore || page.nextCursor == 0L || page.messages.isEmpty()) return@flow
                // A server that does not move back would loop forever.
                if (cursor != null && page.nextCursor >= cursor) return@flow
                cursor = page.nextCursor
            }
        }

    /** Pages forward from after [afterSeq] (0: the first message) to the newest; each page ascending. */
    fun historyForward(conversationId: String, afterSeq: Long = 0, pageSize: Int = 200): Flow<HistoryPage> = flow {
        var cursor = afterSeq
        while (true) {
            val page = getHistory(conversationId, afterSeq = cursor, limit = pageSize)
            emit(page)
            if (!page.hasMore || page.nextCursor == 0L || page.messages.isEmpty()) return@flow
            if (page.nextCursor <= cursor) return@flow
            cursor = page.nextCursor
        }
    }

    /** Presence of users who share a conversation with the caller (anyone else reads as never seen). */
    suspend fun getPresence(userIds: Collection<String>): List<Presence> = call(presence) { s, h ->
        s.getPresence(GetPresenceRequest.newBuilder().addAllUserIds(userIds).build(), h).presencesList
    }

    // ---- sending ------------------------------------------------------------------------------

    /**
     * One-shot send, without a session. Retries UNAVAILABLE and timeouts with the same
     * [clientMessageId] (a retry of a send that was in fact stored gets its seq back instead of
     * storing it twice). A rate-limited or shed (OVERLOADED) send waits the server's retry-after
     * plus jitter and tries again, for at most [rateLimitWait].
     */
    suspend fun send(
        conversationId: String,
        text: String,
        clientMessageId: String = newClientMessageId(),
        deviceId: String = "",
        attempts: Int = config.sendAttempts,
        rateLimitWait: Duration = 30.seconds,
    ): SendAck = send(conversationId, text.encodeToByteArray(), clientMessageId, deviceId, attempts, rateLimitWait)

    suspend fun send(
        conversationId: String,
        body: ByteArray,
        clientMessageId: String = newClientMessageId(),
        deviceId: String = "",
        attempts: Int = config.sendAttempts,
        rateLimitWait: Duration = 30.seconds,
    ): SendAck {
        val request = SendRequest.newBuilder()
            .setConversationId(conversationId)
            .setClientMessageId(clientMessageId)
            .setBody(ByteString.copyFrom(body))
            .setDeviceId(deviceId)
            .build()
        val backoff = Backoff(initial = 100.milliseconds, maximum = 2.seconds)
        var remaining = maxOf(1, attempts)
        // Waiting out the rate limit is not a failed attempt, but it is bounded in time.
        val limitedUntil = TimeSource.Monotonic.markNow() + rateLimitWait
        while (true) {
            try {
                return call(chat) { s, h -> s.send(request, h) }.ack
            } catch (e: RateLimitedException) { // also OverloadedException: shed before any work
                // The server's hint plus jitter: shed clients must not all come back at once.
                val wait = (e.retryAfter ?: 100.milliseconds) * Random.nextDouble(1.0, 1.5)
                if ((TimeSource.Monotonic.markNow() + wait) > limitedUntil) throw e
                delay(wait)
                continue
            } catch (e: UnavailableException) { // also DeadlineExceededException
                remaining--
                if (remaining <= 0) throw e
            }
            delay(backoff.nextDelay())
        }
    }

    // ---- sessions -----------------------------------------------------------------------------

    /** A real-time session (not started: call [ParleySession.start], or use [ParleySession.use]). */
    fun session(options: SessionOptions = SessionOptions()): ParleySession =
        ParleySession(
            ChatServiceCoroutineStub(channel),
            ::metadata,
            options.deviceId ?: deviceId,
            options,
            onReconnect = { channel.resetConnectBackoff() },
        )

    override fun close() {
        channel.shutdown()
        if (!channel.awaitTermination(5, TimeUnit.SECONDS)) channel.shutdownNow()
    }

    companion object {
        val AUTHORIZATION: Metadata.Key<String> = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)

        /** `https://h:p` -> (h:p, TLS); `http://h:p` -> (h:p, plaintext); no scheme -> (target, null). */
        fun splitTarget(target: String): Pair<String, Boolean?> {
            for ((scheme, tls) in listOf("https://" to true, "grpcs://" to true, "http://" to false, "grpc://" to false)) {
                if (target.startsWith(scheme)) return target.removePrefix(scheme).trimEnd('/') to tls
            }
            return target to null
        }

        private fun buildChannel(target: String, config: ParleyClientConfig): ManagedChannel {
            val (address, schemeTls) = splitTarget(target)
            val tls = schemeTls ?: config.tls
            val credentials = config.credentials ?: if (tls) {
                TlsChannelCredentials.newBuilder().apply {
                    config.caFile?.let { trustManager(it.toFile()) }
                }.build()
            } else {
                InsecureChannelCredentials.create()
            }
            val builder = Grpc.newChannelBuilder(address, credentials)
                // Dead connections are found by HTTP/2 keepalive (the gateway allows a ping every 5 s).
                .keepAliveTime(30, TimeUnit.SECONDS)
                .keepAliveTimeout(10, TimeUnit.SECONDS)
            config.serverName?.let { builder.overrideAuthority(it) }
            return builder.build()
        }
    }
}

fun newClientMessageId(): String = UUID.randomUUID().toString().replace("-", "")
