package chat.parley.client

import chat.parley.v1.Message
import chat.parley.v1.Presence
import chat.parley.v1.Receipt
import chat.parley.v1.SendAck
import chat.parley.v1.Typing
import com.google.protobuf.Timestamp
import java.time.Instant
import kotlin.time.Duration

/** What a session's [ParleySession.events] flow emits. */
sealed interface ParleyEvent {
    /** A stream was established (`welcome`); [reconnects] is 0 for the first, then 1, 2, ... */
    data class Connected(val sessionId: String, val userId: String, val reconnects: Int) : ParleyEvent

    /** The stream broke; the session reconnects by itself after [retryIn]. */
    data class Disconnected(val error: ParleyException?, val reason: String, val retryIn: Duration) : ParleyEvent

    /** A message from someone else, in seq order per conversation, never twice. */
    data class MessageReceived(val message: Message) : ParleyEvent {
        val conversationId: String get() = message.conversationId
        val seq: Long get() = message.seq
        val senderId: String get() = message.senderId
        val messageId: String get() = message.messageId

        // The server validates UTF-8; a replacement character only guards against a misbehaving peer.
        val text: String get() = message.body.toStringUtf8()
        val serverTime: Instant? get() = message.serverTime.toInstantOrNull()
    }

    /** The server stored one of this session's sends (also returned by [ParleySession.send]). */
    data class SendAcked(val ack: SendAck) : ParleyEvent

    /** A member's cumulative delivery or read position. */
    data class ReceiptReceived(val receipt: Receipt) : ParleyEvent

    /** Someone is typing, or stopped. */
    data class TypingChanged(val typing: Typing) : ParleyEvent

    /** A contact's presence (with `subscribePresence`): a snapshot on connect, then changes. */
    data class PresenceChanged(val presence: Presence) : ParleyEvent

    /** The backlog asked for in hello has been delivered; what follows is live. */
    data class SyncCompleted(val cursors: Map<String, Long>) : ParleyEvent

    /** An error frame not tied to a pending send (e.g. a rejected typing or read frame). */
    data class ErrorReceived(val error: ParleyException) : ParleyEvent
}

/** The session's connection, as a [kotlinx.coroutines.flow.StateFlow] for UIs. */
sealed interface ConnectionState {
    data object Idle : ConnectionState

    data object Connecting : ConnectionState

    data class Connected(val sessionId: String, val userId: String) : ConnectionState

    data class Reconnecting(val reason: String, val error: ParleyException?, val retryIn: Duration) : ConnectionState

    /** Ended: by [ParleySession.close] ([error] null) or by a failure reconnecting cannot fix. */
    data class Closed(val error: Throwable?) : ConnectionState
}

/** A proto timestamp as an [Instant]; null when unset. */
fun Timestamp.toInstantOrNull(): Instant? =
    if (seconds == 0L && nanos == 0) null else Instant.ofEpochSecond(seconds, nanos.toLong())
