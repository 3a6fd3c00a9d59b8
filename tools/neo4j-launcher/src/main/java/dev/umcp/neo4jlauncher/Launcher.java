package dev.umcp.neo4jlauncher;

import java.io.IOException;
import java.io.InputStream;
import java.net.ServerSocket;
import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilder;
import org.neo4j.harness.Neo4jBuilders;
import org.neo4j.io.ByteUnit;

/**
 * Starts a real Neo4j DBMS (Neo4j's in-process test harness) with only a Bolt connector on
 * loopback, prints {@code bolt <uri>} on stdout once it accepts connections, and stops when
 * stdin closes, so it never outlives the test process that started it.
 *
 * <p>Usage: {@code java -Xmx512m -cp 'neo4j-launcher.jar:lib/*' dev.umcp.neo4jlauncher.Launcher
 * [port] [work-dir]}. Port 0 (the default) picks a free one; the work dir (default: a fresh
 * temporary one) holds the store files and logs. The harness runs WITHOUT authentication: it is
 * for tests only.
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        if (port == 0) {
            port = freePort();
        }
        Neo4jBuilder builder = args.length > 1
                ? Neo4jBuilders.newInProcessBuilder(Path.of(args[1]))
                : Neo4jBuilders.newInProcessBuilder();
        Neo4j neo4j = builder
                .withDisabledServer()
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                // Small page cache: test graphs are tiny and the caller bounds the heap.
                .withConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(64))
                .build();
        // SIGTERM (and the end of stdin, below) stop the DBMS cleanly; SIGKILL is the caller's
        // way to simulate a crash.
        Runtime.getRuntime().addShutdownHook(new Thread(neo4j::close, "neo4j-launcher-stop"));
        System.out.println("bolt " + neo4j.boltURI());
        System.out.flush();
        waitForEof(System.in);
        System.exit(0);
    }

    /** Blocks until the parent closes our stdin (or dies, which closes it too). */
    private static void waitForEof(InputStream in) throws IOException {
        byte[] buf = new byte[256];
        while (in.read(buf) != -1) {
            // Input is ignored; only its end matters.
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        }
    }
}
