package chat.parley.client

import java.io.InputStream
import java.io.OutputStream
import java.net.InetAddress
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.concurrent.thread

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
