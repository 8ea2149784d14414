package chat.parley.client

import chat.parley.v1.AckFrame
import chat.parley.v1.ChatServiceGrpcKt.ChatServiceCoroutineStub
import chat.parley.v1.ConnectRequest
import chat.parley.v1.ConnectResponse
import chat.parley.v1.Cursor
import chat.parley.v1.Hello
import chat.parley.v1.Message
import chat.parley.v1.PingFrame
import chat.parley.v1.ReadFrame
import chat.parley.v1.SendAck
import chat.parley.v1.SendFrame
import chat.parley.v1.SyncComplete
import chat.parley.v1.SyncFrame
import chat.parley.v1.TypingFrame
import chat.parley.v1.Welcome
import com.google.protobuf.ByteString
import io.grpc.Metadata
import io.grpc.Status
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.random.Random
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.nanoseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineName
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.ExperimentalCoroutinesApi
import kotlinx.coroutines.Job
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.receiveAsFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeoutOrNull

/** [AckMode.AUTO]: a message is acknowledged once the events collector has processed it. */
enum class AckMode { AUTO, MANUAL }

data class SessionOptions(
    /** Where the session keeps its cursors; the default lives as long as this options object. */
    val cursorStore: CursorStore = InMemoryCursorStore(),
    /** Defaults to the client's device id. */
    val deviceId: String? = null,
    val ackMode: AckMode = AckMode.AUTO,
    /** Acks are coalesced: one cumulative ack per conversation per interval. */
    val ackInterval: Duration = 50.milliseconds,
    /** Receive the presence of the user's contacts (a snapshot on connect, then changes). */
    val subscribePresence: Boolean = false,
    /** Reconnect backoff (copied: each session has its own state). */
    val backoff: Backoff = Backoff(),
    /** How long the server may take to answer hello with welcome. */
    val connectTimeout: Duration = 10.seconds,
    /** How long a hole in a conversation's seqs may stay open before the session resyncs. */
    val gapTimeout: Duration = 2.seconds,
    /** Re-sends of a stream send that the server shed (OVERLOADED) or failed as UNAVAILABLE/DEADLINE_EXCEEDED. */
    val sendRetries: Int = 5,
)

/**
 * A real-time session over `ChatService.Connect`: one device's live connection.
 *
 * It survives broken streams: it reconnects with jittered exponential backoff (asking the token
 * provider again each time), says hello with its cursors so the server resends exactly what was
 * missed, drops duplicates by (conversation, seq), releases each conversation in seq order, and
 * re-sends every send that was not acknowledged before the break with the same
 * `client_message_id` (the server deduplicates, so a retried send never creates a second message).
 *
 * Delivery to the application is at-least-once: a message's cursor is saved (and, with
 * [AckMode.AUTO], acknowledged to the server) only once the collector of [events] has *finished*
 * with it, i.e. when its `collect` block returns. A crash in between redelivers that message on
 * the next start with the same [CursorStore]; nothing is ever skipped.
 *
 * ```
 * val session = client.session(SessionOptions(subscribePresence = true))
 * session.start()
 * session.events.collect { event ->
 *     if (event is ParleyEvent.MessageReceived) println("${event.senderId}: ${event.text}")
 * }
 * ```
 *
 * Thread-safety: every method may be called from any coroutine; the session's own state is
 * confined to one single-threaded view of [Dispatchers.Default].
 */
@OptIn(ExperimentalCoroutinesApi::class)
class ParleySession internal constructor(
    private val stub: ChatServiceCoroutineStub,
    private val metadata: suspend () -> Metadata,
    val deviceId: String,
    private val options: SessionOptions,
    private val onReconnect: () -> Unit = {},
) {
    private val dispatcher = Dispatchers.Default.limitedParallelism(1)
    private val scope = CoroutineScope(SupervisorJob() + dispatcher + CoroutineName("parley-session-$deviceId"))
    private val store = options.cursorStore
    private val backoff = options.backoff.copy()
    private val clock = TimeSource.Monotonic.markNow()

    // ---- state, touched only on [dispatcher] ----
    private var order = OrderBuffer<Held>()
    private val committed = HashMap<String, Long>()
    private val ackTarget = HashMap<String, Long>()
    private val ackSent = HashMap<String, Long>()
    private val ackDirty = Channel<Unit>(Channel.CONFLATED)
    private val reads = HashMap<String, Long>()
    // Insertion order is send order: the oldest waiting send is the next probe.
    private val pending = LinkedHashMap<String, PendingSend>()
    private val pendingByKey = HashMap<Pair<String, String>, String>()

    // A shed send holds every send of the session until its retry-after (see onError).
    private var heldUntil = Duration.ZERO // on [clock]
    private var holdJob: Job? = null
    private var probe: String? = null // request id
    private var requestIds = 0L
    private val gaps = HashMap<String, GapState>()
    private var out: Channel<ConnectRequest>? = null
    private var connected = false
    private var welcomes = 0
    private var lastRx = Duration.ZERO
    private var runJob: Job? = null
    private var wake = Channel<Unit>(Channel.CONFLATED)
    private var failure: Throwable? = null
    private var synced = false
    private val syncedOrEnded = CompletableDeferred<Unit>()

    @Volatile private var closed = false

    @Volatile private var closedByApp = false
    private val queue = Channel<Item>(Channel.UNLIMITED)
    private val collected = AtomicBoolean(false)
    private val _state = MutableStateFlow<ConnectionState>(ConnectionState.Idle)

    /** The id the server gave the current (or last) stream. */
    @Volatile var sessionId: String = ""
        private set

    /** The authenticated user, from the server's welcome. */
    @Volatile var userId: String = ""
        private set

    /** The connection, for UIs; events say the same in order with the messages. */
    val state: StateFlow<ConnectionState> = _state.asStateFlow()

    /**
     * Everything the session receives, in order; collect it once (a second collector fails).
     * A message counts as processed, and is committed and acked ([AckMode.AUTO]), when the
     * collector returns from it. The flow completes after [close], and fails with the error
     * that ended the session otherwise (e.g. [UnauthenticatedException]).
     */
    val events: Flow<ParleyEvent> = flow {
        check(collected.compareAndSet(false, true)) { "a session's events can be collected once" }
        for (item in queue) {
            if (closedByApp) break // not handed out: uncommitted, delivered again next time
            when (item) {
                is Item.OwnSent -> if (options.ackMode == AckMode.AUTO) commitOnSession(item.conversationId, item.seq)
                is Item.Event -> {
                    emit(item.event)
                    val event = item.event
                    if (event is ParleyEvent.MessageReceived && options.ackMode == AckMode.AUTO) {
                        commitOnSession(event.conversationId, event.seq)
                    }
                }
            }
        }
        val error = withContext(dispatcher) { failure }
        if (error != null) throw error
    }

    // ---- lifecycle --------------------------------------------------------------------------

    /** Loads the cursors and starts connecting in the background; idempotent. */
    suspend fun start() {
        val cursors = store.load()
        withContext(dispatcher) {
            if (closed) throw SessionClosedException()
            if (runJob != null) return@withContext
            committed.putAll(cursors)
            order = OrderBuffer(cursors)
            _state.value = ConnectionState.Connecting
            runJob = scope.launch { run() }
        }
    }

    /** Waits for the first `sync_complete`: the backlog has been received (not necessarily collected). */
    suspend fun awaitSynced() {
        syncedOrEnded.await()
        withContext(dispatcher) {
            failure?.let { throw it }
            if (!synced) throw SessionClosedException("session closed before it synced")
        }
    }

    /**
     * Flushes pending acks, half-closes the stream (the server takes the user offline at once)
     * and fails sends still waiting for an ack with [SessionClosedException]. The events flow
     * completes; messages not yet handed out are not committed and arrive again next time.
     */
    suspend fun close() {
        val (job, graceful) = withContext(dispatcher) {
            if (closed && closedByApp) return@withContext runJob to false
            closedByApp = true
            val wasClosed = closed
            closed = true
            wake.trySend(Unit)
            val o = out
            val graceful = !wasClosed && o != null && connected
            if (graceful && o != null) {
                flushAcks()
                // Frames already queued are written first; then the request stream ends (half-close).
                o.close()
            }
            runJob to graceful
        }
        if (job != null) {
            if (graceful) withTimeoutOrNull(CLOSE_GRACE) { job.join() }
            job.cancelAndJoin()
        }
        withContext(dispatcher + NonCancellable) { end(SessionClosedException()) }
        scope.cancel()
    }

    /** [start]s the session, runs [block] and [close]s the session, also when [block] fails. */
    suspend fun <R> use(block: suspend (ParleySession) -> R): R {
        start()
        try {
            return block(this)
        } finally {
            withContext(NonCancellable) { close() }
        }
    }

    // ---- what the application does -----------------------------------------------------------

    /**
     * Sends over the stream and waits for the server's ack (with its seq).
     *
     * Survives reconnects: an unacknowledged send is re-sent with the same [clientMessageId]; a
     * send the server shed (OVERLOADED, with retry-after) or failed as UNAVAILABLE or
     * DEADLINE_EXCEEDED is re-sent after a jittered exponential backoff, never sooner than the
     * server's hint, and holds the session's other sends meanwhile: they wait (in send order),
     * then the oldest goes alone and the rest follow its ack. Calling it again with the same [clientMessageId] joins the same send.
     * Throws the typed error of an `Error` frame (e.g. [PermissionDeniedException],
     * [RateLimitedException]), [SendTimeoutException] after [timeout], or [SessionClosedException].
     */
    suspend fun send(
        conversationId: String,
        text: String,
        clientMessageId: String = newClientMessageId(),
        timeout: Duration? = null,
    ): SendAck = send(conversationId, text.encodeToByteArray(), clientMessageId, timeout)

    suspend fun send(
        conversationId: String,
        body: ByteArray,
        clientMessageId: String = newClientMessageId(),
        timeout: Duration? = null,
    ): SendAck {
        val p = withContext(dispatcher) {
            if (closed) throw failure ?: SessionClosedException()
            checkNotNull(runJob) { "session not started: call start() (or use { })" }
            val key = conversationId to clientMessageId
            val existing = pendingByKey[key]?.let { pending[it] }
            val p = existing ?: run {
                val requestId = "s${++requestIds}"
                val frame = ConnectRequest.newBuilder()
                    .setRequestId(requestId)
                    .setSend(
                        SendFrame.newBuilder()
                            .setConversationId(conversationId)
                            .setClientMessageId(clientMessageId)
                            .setBody(ByteString.copyFrom(body)),
                    )
                    .build()
                PendingSend(requestId, key, frame).also {
                    pending[requestId] = it
                    pendingByKey[key] = requestId
                    writeSend(it) // waits if disconnected or held
                }
            }
            p.waiters++
            p
        }
        var done = false
        try {
            val ack = if (timeout == null) p.result.await() else withTimeoutOrNull(timeout) { p.result.await() }
            done = ack != null
            return ack ?: throw SendTimeoutException(conversationId, clientMessageId, timeout ?: Duration.ZERO)
        } finally {
            withContext(NonCancellable + dispatcher) {
                p.waiters--
                // Nobody waits for it any more (timed out, cancelled): stop re-sending it.
                if (!done && p.waiters == 0) dropPending(p.requestId)
            }
        }
    }

    /** Manual acknowledgement: everything up to [seq] was processed (saves the cursor, acks now). */
    suspend fun ack(conversationId: String, seq: Long) {
        commitOnSession(conversationId, seq)
        withContext(dispatcher) { flushAcks() }
    }

    /** The user read everything up to [seq] (sent now, or after the next reconnect). */
    suspend fun markRead(conversationId: String, seq: Long) = withContext(dispatcher) {
        if (seq > (reads[conversationId] ?: 0L)) {
            reads[conversationId] = seq
            write(readFrame(conversationId, seq))
        }
    }

    /** Typing indicator; ephemeral, so it is dropped (false) while disconnected. */
    suspend fun typing(conversationId: String, typing: Boolean = true): Boolean = withContext(dispatcher) {
        val frame = TypingFrame.newBuilder().setConversationId(conversationId).setTyping(typing)
        write(ConnectRequest.newBuilder().setTyping(frame).build())
    }

    /**
     * Asks the server to send again every message after these positions (a mid-stream `sync`
     * frame, answered by the messages and a `sync_complete`). What this session already delivered
     * is dropped by (conversation, seq), so the application sees only messages it has not had.
     * False while disconnected: the next hello resumes from the session's own positions anyway.
     */
    suspend fun resync(cursors: Map<String, Long>): Boolean = withContext(dispatcher) {
        val sync = SyncFrame.newBuilder()
        for ((c, s) in cursors.toSortedMap()) sync.addCursors(Cursor.newBuilder().setConversationId(c).setSeq(s))
        write(ConnectRequest.newBuilder().setRequestId("y${++requestIds}").setSync(sync).build())
    }

    /** The committed cursors (what the application finished with). */
    suspend fun cursors(): Map<String, Long> = withContext(dispatcher) { HashMap(committed) }

    // ---- commit -------------------------------------------------------------------------------

    private suspend fun commitOnSession(conversationId: String, seq: Long) = withContext(dispatcher) {
        if (seq > (committed[conversationId] ?: 0L)) {
            committed[conversationId] = seq
            store.save(conversationId, seq)
        }
        if (seq > (ackTarget[conversationId] ?: 0L)) {
            ackTarget[conversationId] = seq
            ackDirty.trySend(Unit)
        }
    }

    // ---- connection loop ----------------------------------------------------------------------

    private suspend fun run() {
        try {
            while (!closed) {
                var error: ParleyException? = null
                val reason = try {
                    connectOnce()
                    "the server ended the stream"
                } catch (e: ConnectionLost) {
                    e.reason
                } catch (e: CancellationException) {
                    throw e
                } catch (e: Exception) {
                    error = ParleyErrors.fromThrowable(e) ?: throw e
                    error.toString()
                }
                if (closed) break
                if (error != null && error.status in FATAL_STATUSES) {
                    end(error)
                    return
                }
                var wait = backoff.nextDelay()
                error?.retryAfter?.let { if (it > wait) wait = it } // e.g. dropped for falling behind
                emit(ParleyEvent.Disconnected(error, reason, wait))
                _state.value = ConnectionState.Reconnecting(reason, error, wait)
                withTimeoutOrNull(wait) { wake.receive() }
                // The channel may still be backing off from the broken connection: try now.
                onReconnect()
            }
        } catch (e: CancellationException) {
            throw e
        } catch (e: Throwable) { // a bug: surface it instead of reconnecting forever
            end(e)
        }
    }

    private suspend fun connectOnce() {
        val headers = try {
            metadata()
        } catch (e: CancellationException) {
            throw e
        } catch (e: Exception) {
            // A token provider that cannot reach its server now may succeed on the next attempt.
            ParleyErrors.fromThrowable(e)?.let { throw it }
            throw ConnectionLost("the token provider failed: $e")
        }
        val o = Channel<ConnectRequest>(Channel.UNLIMITED)
        o.trySend(hello())
        try {
            coroutineScope {
                val welcome = CompletableDeferred<Welcome>()
                launch {
                    stub.connect(o.receiveAsFlow(), headers).collect { frame ->
                        lastRx = clock.elapsedNow()
                        if (welcome.isCompleted) {
                            dispatch(frame)
                        } else {
                            when (frame.frameCase) {
                                ConnectResponse.FrameCase.WELCOME -> {
                                    onWelcome(frame.welcome, o)
                                    welcome.complete(frame.welcome)
                                }
                                ConnectResponse.FrameCase.ERROR -> throw ParleyErrors.fromErrorFrame(frame.error)
                                else -> throw ConnectionLost("expected a welcome frame, got ${frame.frameCase}")
                            }
                        }
                    }
                    throw ConnectionLost(
                        if (welcome.isCompleted) "the server ended the stream" else "the server ended the stream before its welcome",
                    )
                }
                val first = withTimeoutOrNull(options.connectTimeout) { welcome.await() }
                    ?: throw ConnectionLost("no welcome within ${options.connectTimeout}")
                val interval = first.heartbeatInterval.let { it.seconds.seconds + it.nanos.nanoseconds }
                val heartbeat = if (interval.isPositive()) interval else DEFAULT_HEARTBEAT
                launch { heartbeatLoop(heartbeat) }
                launch { ackLoop() }
                launch { gapLoop() }
            }
        } finally {
            connected = false
            out = null
            o.close()
        }
    }

    private fun hello(): ConnectRequest {
        val positions = HashMap(committed)
        for ((c, s) in order.positions()) positions[c] = maxOf(s, positions[c] ?: 0L)
        val sync = SyncFrame.newBuilder()
        for ((c, s) in positions.toSortedMap()) sync.addCursors(Cursor.newBuilder().setConversationId(c).setSeq(s))
        val hello = Hello.newBuilder()
            .setDeviceId(deviceId)
            .setSync(sync)
            .setSubscribePresence(options.subscribePresence)
        return ConnectRequest.newBuilder().setHello(hello).build()
    }

    private suspend fun heartbeatLoop(heartbeat: Duration) {
        val every = maxOf(50.milliseconds, heartbeat / 2)
        // The server answers each ping, so this much silence means the connection is dead even if
        // TCP has not noticed (e.g. a mobile network that dropped the route).
        val silenceLimit = maxOf(heartbeat * 2, every * 2 + 1.seconds)
        var nonce = 0L
        while (true) {
            delay(every)
            val silent = clock.elapsedNow() - lastRx
            if (silent > silenceLimit) throw ConnectionLost("no frame from the server for $silent")
            write(ConnectRequest.newBuilder().setPing(PingFrame.newBuilder().setNonce(++nonce)).build())
        }
    }

    private suspend fun ackLoop() {
        // Coalesces: one cumulative AckFrame per conversation per interval, whatever the message rate.
        while (true) {
            ackDirty.receive()
            delay(options.ackInterval)
            flushAcks()
        }
    }

    private suspend fun gapLoop() {
        while (true) {
            delay(options.gapTimeout / 2)
            checkGaps(clock.elapsedNow())
        }
    }

    private fun checkGaps(now: Duration) {
        val open = order.gaps().associateBy { it.conversationId }
        gaps.keys.retainAll(open.keys)
        for ((conversationId, gap) in open) {
            val key = gap.position to gap.firstHeld
            val state = gaps[conversationId]
            if (state == null || state.key != key) {
                gaps[conversationId] = GapState(key, now)
                continue
            }
            val age = now - state.since
            if (gap.position != null && !state.resynced && age >= options.gapTimeout) {
                // The server resyncs on hello: reconnect, and the hello's cursor (our position)
                // makes it resend what follows; duplicates are dropped.
                state.resynced = true
                throw ConnectionLost("gap in $conversationId after seq ${gap.position}: resyncing")
            } else if (age >= options.gapTimeout * (if (gap.position != null) 3 else 1)) {
                gaps.remove(conversationId)
                release(order.skipGap(conversationId))
            }
        }
    }

    // ---- frames -------------------------------------------------------------------------------

    private fun write(frame: ConnectRequest): Boolean {
        val o = out ?: return false
        if (!connected) return false
        return o.trySend(frame).isSuccess
    }

    /** Sends wait: a hold is running, or its probe has not been answered yet. */
    private val held: Boolean get() = probe != null || clock.elapsedNow() < heldUntil

    private fun writeSend(p: PendingSend) {
        if (held && p.requestId != probe) {
            p.waiting = true
            return
        }
        p.waiting = !write(p.frame)
        if (!p.waiting) p.attempts++
    }

    private fun hold(wait: Duration) {
        val until = clock.elapsedNow() + wait
        if (until <= heldUntil) return // a hold only ever extends
        heldUntil = until
        holdJob?.cancel()
        holdJob = scope.launch {
            delay(wait)
            releaseHold()
        }
    }

    /** The hold is over: the oldest waiting send goes alone (the probe), the others after its answer. */
    private fun releaseHold() {
        holdJob = null
        heldUntil = Duration.ZERO
        nextProbe()
    }

    /** The oldest waiting send goes alone; nothing else is written until it is answered. */
    private fun nextProbe() {
        val next = pending.values.firstOrNull { it.waiting } ?: return
        probe = next.requestId
        writeSend(next) // if disconnected, the next welcome writes it (and only it)
    }

    /**
     * A send is acked or failed for good: if it was the probe, the next oldest waiting send goes as
     * the next probe. The backlog drains one send at a time, each once the previous was answered,
     * never as a burst the gateway must admit or refuse at once (as the Python SDK does).
     */
    private fun settled(requestId: String) {
        if (requestId != probe) return
        probe = null
        if (clock.elapsedNow() < heldUntil) return // a new hold runs: its end sends the next probe
        nextProbe()
    }

    private fun flushAcks() {
        for ((conversationId, seq) in ackTarget) {
            if ((ackSent[conversationId] ?: 0L) < seq) {
                val ack = AckFrame.newBuilder().setConversationId(conversationId).setSeq(seq)
                if (write(ConnectRequest.newBuilder().setAck(ack).build())) ackSent[conversationId] = seq
            }
        }
    }

    private fun onWelcome(welcome: Welcome, o: Channel<ConnectRequest>) {
        sessionId = welcome.sessionId
        userId = welcome.userId
        out = o
        connected = true
        _state.value = ConnectionState.Connected(welcome.sessionId, welcome.userId)
        emit(ParleyEvent.Connected(welcome.sessionId, welcome.userId, welcomes))
        welcomes++
        // Acks and reads written just before a break may be lost: send the latest ones again.
        ackSent.clear()
        flushAcks()
        for ((conversationId, seq) in reads) write(readFrame(conversationId, seq))
        for (p in pending.values.toList()) writeSend(p)
    }

    private fun dispatch(frame: ConnectResponse) {
        when (frame.frameCase) {
            ConnectResponse.FrameCase.MESSAGE -> {
                val m = frame.message
                release(order.offer(m.conversationId, m.seq, Held.Msg(m)))
            }
            ConnectResponse.FrameCase.SEND_ACK -> onSendAck(frame.sendAck)
            ConnectResponse.FrameCase.ERROR -> onError(frame.error)
            ConnectResponse.FrameCase.SYNC_COMPLETE -> onSyncComplete(frame.syncComplete)
            ConnectResponse.FrameCase.RECEIPT -> emit(ParleyEvent.ReceiptReceived(frame.receipt))
            ConnectResponse.FrameCase.TYPING -> emit(ParleyEvent.TypingChanged(frame.typing))
            ConnectResponse.FrameCase.PRESENCE -> emit(ParleyEvent.PresenceChanged(frame.presence))
            // pong only proves liveness (lastRx); a second welcome or an unknown frame: ignored.
            else -> Unit
        }
    }

    private fun onSendAck(ack: SendAck) {
        pendingByKey[ack.conversationId to ack.clientMessageId]?.let { requestId ->
            popPending(requestId)?.result?.complete(ack)
        }
        emit(ParleyEvent.SendAcked(ack))
        if (ack.seq > 0) {
            // The server does not echo our own message to this session, so its seq must not look
            // like a gap. It may overtake the delivery of an earlier seq: never an anchor.
            release(order.offer(ack.conversationId, ack.seq, Held.Own(ack.conversationId, ack.seq), anchor = false))
        }
    }

    private fun onError(frame: chat.parley.v1.Error) {
        val error = ParleyErrors.fromErrorFrame(frame)
        val p = if (frame.requestId.isNotEmpty()) pending[frame.requestId] else null
        if (p == null) {
            emit(ParleyEvent.ErrorReceived(error))
            return
        }
        // The per-user rate limit (RATE_LIMITED) is the application's to see; being shed
        // (OVERLOADED), a timeout or an outage is the server's problem: resend the same
        // client_message_id after the server's hint, backing off with jitter so many shed
        // clients do not come back at the same instant. The whole outbox waits, not just this send:
        // sends written meanwhile would meet the same refusal (each costing the server one) or be
        // stored ahead of this one, out of send order. When the hold ends the oldest waiting send
        // goes alone and each of the rest follows the previous one's ack, so a client still refused
        // costs one refusal per hold.
        val transient = error.status in RESEND_STATUSES || error is OverloadedException
        if (transient && p.attempts < options.sendRetries) {
            val ceiling = minOf(5.seconds, 100.milliseconds * (1 shl minOf(p.attempts, 20)))
            var wait = ceiling * Random.nextDouble(0.5, 1.0)
            error.retryAfter?.let { if (it > wait) wait = it }
            p.waiting = true
            if (probe == p.requestId) probe = null // refused again: the next probe is the oldest again
            hold(wait)
            return
        }
        popPending(p.requestId)
        p.result.completeExceptionally(error)
    }

    private fun onSyncComplete(sync: SyncComplete) {
        val cursors = sync.cursorsList.associate { it.conversationId to it.seq }
        for ((conversationId, seq) in cursors) release(order.setBaseline(conversationId, seq))
        backoff.reset()
        emit(ParleyEvent.SyncCompleted(cursors))
        synced = true
        syncedOrEnded.complete(Unit)
    }

    private fun release(items: List<Held>) {
        for (item in items) {
            when (item) {
                is Held.Msg -> emit(ParleyEvent.MessageReceived(item.message))
                is Held.Own -> queue.trySend(Item.OwnSent(item.conversationId, item.seq))
            }
        }
    }

    private fun emit(event: ParleyEvent) {
        queue.trySend(Item.Event(event))
    }

    // ---- pending sends ------------------------------------------------------------------------

    private fun popPending(requestId: String): PendingSend? {
        val p = pending.remove(requestId) ?: return null
        pendingByKey.remove(p.key)
        settled(requestId)
        return p
    }

    private fun dropPending(requestId: String) {
        popPending(requestId)?.result?.cancel()
    }

    /** Ends the session: fails waiting sends, ends the event flow (with [failure] unless closed). */
    private fun end(failure: Throwable) {
        val alreadyClosed = closed
        closed = true
        if (!alreadyClosed || failure !is SessionClosedException) this.failure = this.failure ?: failure
        probe = null
        heldUntil = Duration.ZERO
        holdJob?.cancel()
        holdJob = null
        for (requestId in pending.keys.toList()) popPending(requestId)?.result?.completeExceptionally(failure)
        syncedOrEnded.complete(Unit)
        _state.value = ConnectionState.Closed(this.failure)
        queue.close()
    }

    private class PendingSend(val requestId: String, val key: Pair<String, String>, val frame: ConnectRequest) {
        val result = CompletableDeferred<SendAck>()
        var attempts = 0

        /** Not on the stream: waiting for the outbox's hold to end (or for a welcome). */
        var waiting = true
        var waiters = 0
    }

    private class GapState(val key: Pair<Long?, Long>, val since: Duration) {
        var resynced = false
    }

    private sealed interface Held {
        data class Msg(val message: Message) : Held

        /** One of our own sends, acknowledged at this seq: passes the position without reaching the app. */
        data class Own(val conversationId: String, val seq: Long) : Held
    }

    private sealed interface Item {
        data class Event(val event: ParleyEvent) : Item

        data class OwnSent(val conversationId: String, val seq: Long) : Item
    }

    private class ConnectionLost(val reason: String) : Exception(reason)

    companion object {
        /** Failures reconnecting cannot fix: the same hello would fail the same way. */
        val FATAL_STATUSES: Set<Status.Code> = setOf(
            Status.Code.UNAUTHENTICATED,
            Status.Code.PERMISSION_DENIED,
            Status.Code.INVALID_ARGUMENT,
            Status.Code.FAILED_PRECONDITION,
            Status.Code.UNIMPLEMENTED,
        )

        // Stream sends failing with these are re-sent (same client_message_id) after a backoff.
        private val RESEND_STATUSES = setOf(Status.Code.UNAVAILABLE, Status.Code.DEADLINE_EXCEEDED)

        // Used when the server's welcome carries no heartbeat interval.
        private val DEFAULT_HEARTBEAT = 30.seconds

        // close() waits this long for queued acks to be written and the server to end the stream.
        private val CLOSE_GRACE = 2.seconds

        private fun readFrame(conversationId: String, seq: Long): ConnectRequest =
            ConnectRequest.newBuilder().setRead(ReadFrame.newBuilder().setConversationId(conversationId).setSeq(seq))
                .build()
    }
}
