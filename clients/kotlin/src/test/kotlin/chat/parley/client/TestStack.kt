package chat.parley.client

import java.io.InputStream
import java.io.OutputStream
import java.net.InetAddress
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Path
import java.util.Base64
import java.util.UUID
import java.util.concurrent.CopyOnWriteArrayList
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import kotlin.concurrent.thread
import org.junit.jupiter.api.Assumptions.assumeTrue

/**
 * The local stack the tests run against: `PARLEY_GATEWAY` (host:port) and `PARLEY_CA_FILE` (the
 * development CA) are set by tests/clients/test_kotlin_sdk.py, which starts the stack. Without
 * them the stack tests are skipped, and that wrapper fails on any skipped test.
 */
object TestStack {
    val gateway: String? = System.getenv("PARLEY_GATEWAY")
    val caFile: Path? = System.getenv("PARLEY_CA_FILE")?.let(Path::of)

    // services/parley/auth.py DEV_SECRET: accepted only by a stack in development mode.
    private const val DEV_SECRET = "parley-development-secret-do-not-use-in-production"

    fun requireStack(): String {
        assumeTrue(gateway != null, "PARLEY_GATEWAY is not set: run through `make kotlin-test` (starts the stack)")
        return gateway!!
    }

    /** A user id of its own for each test, so reruns never meet old conversations. */
    fun user(name: String): String = "kt-$name-${UUID.randomUUID().toString().take(8)}"

    /** An HS256 JWT with the development secret, as `parley token` mints it. */
    fun token(userId: String, ttlSeconds: Long = 3600, secret: String = DEV_SECRET): String {
        val now = System.currentTimeMillis() / 1000
        val enc = Base64.getUrlEncoder().withoutPadding()
        val header = enc.encodeToString("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
        val payload = enc.encodeToString("""{"sub":"$userId","iat":$now,"exp":${now + ttlSeconds}}""".toByteArray())
        val mac = Mac.getInstance("HmacSHA256").apply { init(SecretKeySpec(secret.toByteArray(), "HmacSHA256")) }
        val signature = enc.encodeToString(mac.doFinal("$header.$payload".toByteArray()))
        return "$header.$payload.$signature"
    }

    fun client(
        userId: String,
        target: String = requireStack(),
        configure: ParleyClientConfig.() -> Unit = {},
    ): ParleyClient = ParleyClient(target) {
        token(TestStack.token(userId))
        caFile = this@TestStack.caFile
        configure()
    }
}

/**
 * A TCP proxy in front of the gateway whose connections the test can cut ([breakAll]) while it
 * keeps accepting new ones: a real broken connection (the TLS session and HTTP/2 connection die
 * with it), after which the SDK must reconnect and resume.
 */
class TcpProxy(private val target: InetSocketAddress) : AutoCloseable {
    private val server = ServerSocket(0, 50, InetAddress.getLoopbackAddress())
    private val sockets = CopyOnWriteArrayList<Socket>()

    @Volatile var accepted = 0
        private set

    val address: String get() = "127.0.0.1:${server.localPort}"

    init {
        thread(isDaemon = true, name = "proxy-accept") {
            while (!server.isClosed) {
                val client = runCatching { server.accept() }.getOrNull() ?: break
                val upstream = runCatching { Socket(target.hostString, target.port) }.getOrElse {
                    client.close()
                    continue
                }
                accepted++
                sockets += client
                sockets += upstream
                pump(client.getInputStream(), upstream.getOutputStream(), client, upstream)
                pump(upstream.getInputStream(), client.getOutputStream(), client, upstream)
            }
        }
    }

    private fun pump(input: InputStream, output: OutputStream, a: Socket, b: Socket) {
        thread(isDaemon = true, name = "proxy-pump") {
            val buffer = ByteArray(16 * 1024)
            try {
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    output.write(buffer, 0, n)
                    output.flush()
                }
            } catch (_: Exception) {
                // the other side was cut
            } finally {
                runCatching { a.close() }
                runCatching { b.close() }
            }
        }
    }

    /** Cuts every open connection (both sides), as a network failure would. */
    fun breakAll() {
        for (socket in sockets) {
            runCatching { socket.setSoLinger(true, 0) } // RST, not a polite FIN
            runCatching { socket.close() }
        }
        sockets.clear()
    }

    override fun close() {
        server.close()
        breakAll()
    }

    companion object {
        fun parse(hostPort: String): InetSocketAddress {
            val i = hostPort.lastIndexOf(':')
            return InetSocketAddress(hostPort.substring(0, i), hostPort.substring(i + 1).toInt())
        }
    }
}
