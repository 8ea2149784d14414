package chat.parley.conformance

import chat.parley.client.AckMode
import chat.parley.client.InMemoryCursorStore
import chat.parley.client.ParleyClient
import chat.parley.client.ParleyEvent
import chat.parley.client.ParleyException
import chat.parley.client.ParleySession
import chat.parley.client.SendTimeoutException
import chat.parley.client.SessionOptions
import chat.parley.client.TcpProxy
import chat.parley.client.newClientMessageId
import chat.parley.v1.Message
import chat.parley.v1.Receipt
import chat.parley.v1.ReceiptKind
import chat.parley.v1.SendAck
import com.google.gson.JsonArray
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import java.io.File
import java.nio.file.Path
import kotlin.system.exitProcess
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull

/*
 * The Kotlin SDK's conformance driver (clients/conformance/README.md): runs every scenario of the
 * plan with the SDK's public API and writes one result line per scenario.
 *
 *     .venv/bin/python -m tests.conformance.harness -- clients/kotlin/conformance-driver.sh
 *
 * Each client talks to the gateway through its own TcpProxy, so that kill_connection cuts its TCP
 * connection under the SDK (TLS included), as a network loss would; the SDK has to notice and
 * resume by itself. Everything runs on runBlocking's one thread, so the driver's own state needs
 * no locks.
 */

private val DEFAULT_TIMEOUT = 10.seconds

class StepFailed(message: String) : Exception(message)

/** One device of one user: its SDK client, cursor store and what its application received. */
class Client(
    private val scope: CoroutineScope,
    token: String,
    val deviceId: String,
    gateway: String,
    caFile: String,
) {
    val proxy = TcpProxy(TcpProxy.parse(gateway))
    val sdk = ParleyClient(proxy.address) {
        token(token)
        this.deviceId = this@Client.deviceId
        this.caFile = Path.of(caFile)
    }
    private val store = InMemoryCursorStore()
    var session: ParleySession? = null
    private var consumer: Job? = null
    val messages = HashMap<String, MutableList<Message>>()

    /** How far expect_messages has read, per conversation. */
    val readUpto = HashMap<String, Int>()
    val receipts = ArrayList<Receipt>()
    var failure: Throwable? = null

    /** Transport failures the session saw (and recovered from), and kill_connection steps. */
    var disconnects = 0
    var kills = 0
    private val changed = MutableStateFlow(0)

    suspend fun connect(timeout: Duration) {
        if (session != null) throw StepFailed("already connected")
        // Manual acks: a message counts as processed as soon as the driver has it, so the cursor
        // store is up to date whenever a step disconnects.
        val s = sdk.session(SessionOptions(cursorStore = store, deviceId = deviceId, ackMode = AckMode.MANUAL))
        session = s
        s.start()
        consumer = scope.launch {
            try {
                s.events.collect { event ->
                    when (event) {
                        is ParleyEvent.MessageReceived -> {
                            messages.getOrPut(event.conversationId) { ArrayList() } += event.message
                            s.ack(event.conversationId, event.seq)
                        }
                        is ParleyEvent.ReceiptReceived -> receipts += event.receipt
                        is ParleyEvent.Disconnected -> disconnects++
                        else -> return@collect
                    }
                    changed.value++
                }
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) {
                failure = e
                changed.value++
            }
        }
        withTimeoutOrNull(timeout) { s.awaitSynced() } ?: throw StepFailed("the session did not sync within $timeout")
    }

    suspend fun disconnect() {
        val s = session
        val c = consumer
        session = null
        consumer = null
        s?.close()
        c?.join()
    }

    fun live(): ParleySession = session ?: throw StepFailed("not connected (a connect step is missing)")

    suspend fun waitFor(timeout: Duration, what: String, predicate: () -> Boolean) {
        withTimeoutOrNull(timeout) { changed.first { failure != null || predicate() } }
            ?: throw StepFailed("no $what within $timeout")
        failure?.let { if (!predicate()) throw StepFailed("the session failed while waiting for $what: $it") }
    }

    suspend fun close() {
        withContext(NonCancellable) {
            runCatching { disconnect() }
            runCatching { sdk.close() }
            runCatching { proxy.close() }
        }
    }
}

private fun JsonObject.str(key: String): String = get(key).asString

private fun JsonObject.long(key: String): Long = get(key).asLong

private fun bodyOf(step: JsonObject): ByteArray = when {
    step.has("body_size") -> ByteArray(step.get("body_size").asInt) { 'x'.code.toByte() }
    step.has("body_hex") -> step.str("body_hex").chunked(2).map { it.toInt(16).toByte() }.toByteArray()
    else -> step.str("text").encodeToByteArray()
}

private fun describe(m: Message): String {
    val body = m.body.toStringUtf8()
    val shown = if (body.length <= 40) body else "${body.take(20)}...(${m.body.size()} bytes)"
    return "seq ${m.seq} '$shown' from ${m.senderId}"
}

class ScenarioRun(private val scope: CoroutineScope, private val scenario: JsonObject, private val plan: JsonObject) {
    private val clients = LinkedHashMap<String, Client>()
    private val skipped = ArrayList<Int>()

    private fun conversationId(step: JsonObject): String =
        if (step.has("conversation_id")) step.str("conversation_id")
        else scenario.getAsJsonObject("conversations").str(step.str("conversation"))

    private fun userId(key: String): String = scenario.getAsJsonObject("users").getAsJsonObject(key).str("user_id")

    suspend fun run(): JsonObject {
        val name = scenario.str("name")
        var index = -1
        val result = JsonObject().apply { addProperty("scenario", name) }
        try {
            for ((key, spec) in scenario.getAsJsonObject("clients").entrySet()) {
                val user = scenario.getAsJsonObject("users").getAsJsonObject(spec.asJsonObject.str("user"))
                clients[key] = Client(scope, user.str("token"), spec.asJsonObject.str("device_id"), plan.str("gateway"), plan.str("ca_file"))
            }
            for ((i, step) in scenario.getAsJsonArray("steps").withIndex()) {
                index = i
                step(step.asJsonObject)
            }
            for ((key, client) in clients) {
                // Else the later steps passed over a connection the kill never cut: proves nothing.
                if (client.kills > 0 && client.disconnects == 0) {
                    throw StepFailed("$key: kill_connection did not break the session's transport")
                }
            }
            result.addProperty("status", "pass")
            if (skipped.isNotEmpty()) result.add("skipped_steps", JsonArray().apply { skipped.forEach { add(it) } })
        } catch (e: StepFailed) {
            fail(result, index, e.message ?: "failed")
        } catch (e: TimeoutCancellationException) {
            fail(result, index, "timed out: ${e.message}")
        } catch (e: CancellationException) {
            throw e
        } catch (e: Exception) {
            fail(result, index, "driver error: $e")
        } finally {
            for (client in clients.values) client.close()
        }
        return result
    }

    private fun fail(result: JsonObject, index: Int, detail: String) {
        result.addProperty("status", "fail")
        result.addProperty("step", index)
        result.addProperty("detail", detail)
    }

    private suspend fun step(step: JsonObject) {
        val client = clients[step.str("client")] ?: throw StepFailed("no client ${step.str("client")}")
        val timeout = if (step.has("timeout_s")) step.get("timeout_s").asDouble.seconds else DEFAULT_TIMEOUT
        when (val op = step.str("op")) {
            "connect" -> client.connect(timeout)
            "disconnect" -> client.disconnect()
            "kill_connection" -> {
                client.proxy.breakAll()
                client.kills++
            }
            "send" -> opSend(client, step, timeout)
            "send_many" -> opSendMany(client, step, timeout)
            "expect_messages" -> opExpectMessages(client, step, timeout)
            "resync" -> {
                val cursors = mapOf(conversationId(step) to step.long("after_seq"))
                if (!client.live().resync(cursors)) throw StepFailed("resync while disconnected")
            }
            "mark_read" -> client.live().markRead(conversationId(step), step.long("seq"))
            "expect_receipt" -> opExpectReceipt(client, step, timeout)
            else -> throw StepFailed("unknown op '$op'")
        }
    }

    private suspend fun send(client: Client, step: JsonObject, body: ByteArray, timeout: Duration): SendAck {
        val conversationId = conversationId(step)
        val cmid = when {
            step.has("client_message_id_size") -> "k".repeat(step.get("client_message_id_size").asInt)
            step.has("client_message_id") -> step.str("client_message_id")
            else -> newClientMessageId()
        }
        val via = if (step.has("via")) step.str("via") else "session"
        return if (via == "unary") {
            withTimeout(timeout) { client.sdk.send(conversationId, body, cmid, deviceId = client.deviceId) }
        } else {
            try {
                client.live().send(conversationId, body, cmid, timeout)
            } catch (e: SendTimeoutException) {
                throw StepFailed("no ack within $timeout")
            }
        }
    }

    private suspend fun opSend(client: Client, step: JsonObject, timeout: Duration) {
        val expect = step.getAsJsonObject("expect")
        val ack = try {
            send(client, step, bodyOf(step), timeout)
        } catch (e: ParleyException) {
            val want = expect.getAsJsonObject("error") ?: throw StepFailed("send failed: $e")
            val got = e.status.name to e.code.name
            if (got != (want.str("grpc_status") to want.str("code"))) {
                throw StepFailed("expected ${want.str("grpc_status")}/${want.str("code")}, got ${got.first}/${got.second}")
            }
            return
        }
        if (expect.has("error")) {
            throw StepFailed("expected ${expect.getAsJsonObject("error").str("code")}, got an ack with seq ${ack.seq}")
        }
        if (expect.has("seq") && ack.seq != expect.long("seq")) {
            throw StepFailed("expected seq ${expect.long("seq")}, got ${ack.seq}")
        }
        if (expect.has("duplicate") && ack.duplicate != expect.get("duplicate").asBoolean) {
            throw StepFailed("expected duplicate=${expect.get("duplicate").asBoolean}, got ${ack.duplicate}")
        }
    }

    private suspend fun opSendMany(client: Client, step: JsonObject, timeout: Duration) {
        val first = step.getAsJsonObject("expect")?.takeIf { it.has("first_seq") }?.long("first_seq")
        for (i in 1..step.get("count").asInt) {
            val text = step.str("text").replace("{i}", i.toString())
            val ack = send(client, step, text.encodeToByteArray(), timeout)
            if (first != null && ack.seq != first + i - 1) throw StepFailed("send $i: expected seq ${first + i - 1}, got ${ack.seq}")
        }
    }

    private fun expectedMessages(step: JsonObject): List<JsonObject> {
        if (step.has("messages")) return step.getAsJsonArray("messages").map { it.asJsonObject }
        return (1..step.get("count").asInt).map { i ->
            JsonObject().apply {
                addProperty("seq", step.long("first_seq") + i - 1)
                addProperty("text", step.str("text").replace("{i}", i.toString()))
                addProperty("sender", step.str("sender"))
            }
        }
    }

    private suspend fun opExpectMessages(client: Client, step: JsonObject, timeout: Duration) {
        val conversationId = conversationId(step)
        val expected = expectedMessages(step)
        val start = client.readUpto[conversationId] ?: 0
        val end = start + expected.size
        val got = client.messages.getOrPut(conversationId) { ArrayList() }
        try {
            client.waitFor(timeout, "${expected.size} messages") { got.size >= end }
        } catch (e: StepFailed) {
            throw StepFailed("${e.message}; got ${got.drop(start).map(::describe)}")
        }
        for ((want, message) in expected.zip(got.subList(start, end))) {
            val body = bodyOf(want)
            val sender = userId(want.str("sender"))
            val cmid = if (want.has("client_message_id")) want.str("client_message_id") else null
            if (message.seq != want.long("seq") || !message.body.toByteArray().contentEquals(body) ||
                message.senderId != sender || (cmid != null && message.clientMessageId != cmid) ||
                message.conversationId != conversationId
            ) {
                throw StepFailed(
                    "expected seq ${want.long("seq")} '${body.decodeToString().take(40)}' from $sender, got ${describe(message)}; " +
                        "all received since: ${got.drop(start).map(::describe)}",
                )
            }
        }
        client.readUpto[conversationId] = end
    }

    private suspend fun opExpectReceipt(client: Client, step: JsonObject, timeout: Duration) {
        val conversationId = conversationId(step)
        val user = userId(step.str("user"))
        val kind = ReceiptKind.valueOf("RECEIPT_KIND_${step.str("kind")}")
        val seq = step.long("seq")
        try {
            client.waitFor(timeout, "${step.str("kind")} receipt of $user at seq >= $seq") {
                client.receipts.any { it.conversationId == conversationId && it.userId == user && it.kind == kind && it.seq >= seq }
            }
        } catch (e: StepFailed) {
            throw StepFailed("${e.message}; receipts received: ${client.receipts.map { Triple(it.userId, it.kind, it.seq) }}")
        }
    }
}

fun main() {
    val planPath = System.getenv("PARLEY_CONFORMANCE_PLAN")
    val resultsPath = System.getenv("PARLEY_CONFORMANCE_RESULTS")
    if (planPath == null || resultsPath == null) {
        System.err.println("kotlin driver: PARLEY_CONFORMANCE_PLAN and PARLEY_CONFORMANCE_RESULTS must be set (run me under tests.conformance.harness)")
        exitProcess(2)
    }
    val plan = JsonParser.parseString(File(planPath).readText()).asJsonObject
    val results = runBlocking {
        plan.getAsJsonArray("scenarios").map { scenario ->
            val result = ScenarioRun(this, scenario.asJsonObject, plan).run()
            println("kotlin driver: $result")
            result
        }
    }
    File(resultsPath).writeText(results.joinToString("") { "$it\n" })
    // gRPC's transport threads must not keep the JVM alive.
    exitProcess(0)
}
