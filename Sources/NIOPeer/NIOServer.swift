import ServerKit
import Protocols
import BackendKit
import NIOCore
import NIOPosix
import Synchronization

/// SwiftNIO, the Swift ecosystem's standard runtime, as a reference peer: a plain echo handler,
/// or for rpc a `ByteToMessageDecoder` and a handler, on a `MultiThreadedEventLoopGroup` with
/// `threads` loops. It is measured beside the three models,
/// not one of them. NIO makes its own system calls, so its stats cannot count them.
public final class NIOServer: BackendServer, Sendable {
    public let kind = BackendKind.nio
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    /// The event loops, the listening channel and the bound address: set by start(), read by stop().
    private let lifecycle: Mutex<(group: MultiThreadedEventLoopGroup?, listener: Channel?, bound: ServerKit.SocketAddress)>
    /// push and poll: topics, jobs and notes between channels on any loop.
    private let hub: Hub

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        lifecycle = Mutex((nil, nil, configuration.address))
        hub = Hub(options: configuration.notifications)
    }

    public var boundAddress: ServerKit.SocketAddress { lifecycle.withLock { $0.bound } }

    public func start() throws {
        let threads = max(configuration.threads, 1)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        // One counter block per event loop: a handler only ever runs on its channel's loop.
        var byLoop: [ObjectIdentifier: ThreadCounters] = [:]
        for loop in group.makeIterator() { byLoop[ObjectIdentifier(loop)] = registry.makeCounters() }
        let countersByLoop = byLoop
        let acceptCounters = registry.makeCounters()
        let limit = self.limit
        let maxOwed = configuration.maxOwedPerConnection
        let pattern = configuration.pattern, maxFrame = configuration.maxFrameSize, hub = self.hub
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: maxOwed / 2, high: maxOwed))
            .childChannelInitializer { channel in
                let counters = countersByLoop[ObjectIdentifier(channel.eventLoop)] ?? acceptCounters
                guard limit.acquire() else {
                    counters.add(.refused)
                    return channel.close()
                }
                counters.add(.accepted)
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    switch pattern {
                    case .echo:
                        try pipeline.addHandler(NIOEchoHandler(counters: counters, limit: limit))
                    case .rpc:
                        try pipeline.addHandler(NIOInboundByteCounter(counters: counters))
                        try pipeline.addHandler(ByteToMessageHandler(RpcFrameDecoder(maxFrameSize: maxFrame)))
                        try pipeline.addHandler(NIORpcHandler(counters: counters, limit: limit))
                    case .push:
                        try pipeline.addHandler(NIOSessionHandler<NotificationSession<PushPattern>>(
                            counters: counters, limit: limit, hub: hub, maxOwed: maxOwed, maxFrameSize: maxFrame))
                    case .poll:
                        try pipeline.addHandler(NIOSessionHandler<NotificationSession<PollPattern>>(
                            counters: counters, limit: limit, hub: hub, maxOwed: maxOwed, maxFrameSize: maxFrame))
                    }
                }
            }
        do {
            let channel = try bootstrap.bind(host: configuration.address.hostText, port: Int(configuration.address.port)).wait()
            var bound = configuration.address
            if let local = channel.localAddress, let port = local.port {
                bound = try ServerKit.SocketAddress(host: configuration.address.hostText, port: port)
            }
            lifecycle.withLock { $0 = (group, channel, bound) }
            do {
                try hub.start(registry: registry)
            } catch {
                stop()
                throw error
            }
        } catch let error as IOError {
            try? group.syncShutdownGracefully()
            let errno = Errno(rawValue: error.errnoCode)
            if errno == .addressInUse {
                throw UsageError("port \(configuration.address.port) on \(configuration.address.hostText) is already in use: pick another port, or 0 for a free one")
            }
            throw UsageError("cannot listen on \(configuration.address): \(errno)")
        }
    }

    public func stats() -> ServerStats {
        var stats = ServerStats(backend: kind, threads: max(configuration.threads, 1), counters: registry.totals())
        stats.pattern = configuration.pattern
        stats.unavailable = ["syscalls"]
        hub.record(into: &stats)
        return stats
    }

    public func stop() {
        hub.stop()
        let (group, listener) = lifecycle.withLock { state in
            defer { state.group = nil; state.listener = nil }
            return (state.group, state.listener)
        }
        try? listener?.close().wait()  // already closed: nothing to do
        try? group?.syncShutdownGracefully()
    }
}

/// Echoes every buffer back on the loop that read it. Back-pressure: reading stops while the
/// channel is not writable (its outbound buffer passed the high watermark, `--max-owed`).
final class NIOEchoHandler: ChannelDuplexHandler, NIOConnectionLifecycle {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let counters: ThreadCounters
    let limit: ConnectionLimit

    init(counters: ThreadCounters, limit: ConnectionLimit) {
        self.counters = counters
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytes
        counters.add(.bytesIn, UInt64(bytes))
        counters.add(.bytesOut, UInt64(bytes))  // handed to NIO to write
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

/// What every connection handler of the peer does the same way, whatever its pattern:
/// back-pressure (reading stops while the channel is not writable, its outbound buffer past the
/// high watermark `--max-owed`), half-close (everything owed is written, then the connection
/// closes), and the close and reset counters.
protocol NIOConnectionLifecycle: ChannelInboundHandler where OutboundOut == ByteBuffer {
    var counters: ThreadCounters { get }
    var limit: ConnectionLimit { get }
}

extension NIOConnectionLifecycle {
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.channel.setOption(.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // Writes complete in order: once an empty write is done, every answer before it
            // has been written; then close.
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                channel.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        counters.add(.closed)
        limit.release()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        counters.add(.resets)
        context.close(promise: nil)
    }
}

extension BackendKind {
    /// SwiftNIO, measured beside the models as a reference peer.
    public static let nio = BackendKind("nio")
}

extension NIOServer: BackendFactory {
    public static func makeServer(configuration: ServerConfiguration) -> any BackendServer {
        NIOServer(configuration: configuration)
    }

    /// NIO serves the patterns through its own channel handlers, not a session type.
    public static func makeServer<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) -> (any BackendServer)? {
        nil
    }
}
