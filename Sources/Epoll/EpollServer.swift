import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The readiness model: `threads` event loops, each with its own `SO_REUSEPORT` listener and
/// epoll instance, non-blocking sockets, level-triggered events.
public final class EpollServer: EchoServer, @unchecked Sendable {
    public let kind = BackendKind.epoll
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    private let stopping = Atomic<Bool>(false)
    // Written by start()/stop() on the controlling thread only.
    private var threads: [OSThread] = []
    private var wakeFDs: [Int32] = []
    private var bound: SocketAddress

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        self.bound = configuration.address
    }

    public var boundAddress: SocketAddress { bound }

    public func start() throws {
        let loops = max(configuration.threads, 1)
        let (listeners, address) = try Socket.listenOnEachLoop(configuration.address, count: loops, nonBlocking: true)
        bound = address
        var resources: [(listener: Int32, epoll: Int32, wake: Int32, counters: ThreadCounters)] = []
        do {
            for listener in listeners {
                let counters = registry.makeCounters()
                let sys = SystemCalls(counters: counters)
                let epfd = try sys.epollCreate()
                let wake: Int32
                do { wake = try sys.makeEventFD() } catch { close(epfd); throw error }
                resources.append((listener, epfd, wake, counters))
                try sys.epollCtl(epfd, Epoll.add, listener, events: Epoll.input, data: EpollEventLoop.listenerToken)
                try sys.epollCtl(epfd, Epoll.add, wake, events: Epoll.input, data: EpollEventLoop.wakeToken)
            }
        } catch {
            for r in resources { close(r.epoll); close(r.wake) }
            for fd in listeners { close(fd) }
            throw error
        }
        for r in resources {
            let setup = EpollEventLoop.Setup(
                listener: r.listener, epoll: r.epoll, wake: r.wake, counters: r.counters,
                limit: limit, maxOwed: configuration.maxOwedPerConnection, injection: configuration.injection)
            wakeFDs.append(r.wake)
            threads.append(try OSThread(name: "iob-epoll-\(threads.count)") { [self] in
                var loop = EpollEventLoop(setup)
                loop.run(until: self.stopping)
            })
        }
    }

    public func stats() -> ServerStats {
        ServerStats(backend: kind, threads: max(configuration.threads, 1), counters: registry.totals())
    }

    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        var one: UInt64 = 1
        for fd in wakeFDs { _ = write(fd, &one, 8) }
        for thread in threads { thread.join() }
        threads.removeAll()
        for fd in wakeFDs { close(fd) }
        wakeFDs.removeAll()
    }
}
