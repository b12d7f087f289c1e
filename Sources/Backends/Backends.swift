import Blocking
import ServerKit
import Protocols
import BackendKit
import Epoll
import IoUring
import NIOPeer
import PPoll

/// The backend registry: every backend, described once. The CLI, the harness, the checks and
/// the charts list backends by reading this, so a new backend is its module plus one entry here.
public enum Backends {
    /// In the order tables and charts show them: the models, then reference peers.
    /// The lingering closer's calls (a thread of every backend but NIO, started by the first refusal).
    static let lingering: [SyscallKind] = [.shutdown, .recv, .epollWait, .epollCtl, .close]

    public static let all: [BackendDescriptor] = [
        BackendDescriptor(
            kind: .blocking, summary: "a thread per connection, blocking recv/send", threading: .threadPerConnection,
            colour: "#D55E00", marker: "square",  // vermillion
            syscallKinds: [.accept, .recv, .send, .close, .eventfd, .poll, .other] + lingering,
            factory: BlockingServer.self),
        BackendDescriptor(
            kind: .epoll, summary: "readiness: non-blocking sockets and epoll_wait", threading: .eventLoops,
            colour: "#0072B2", marker: "circle",  // blue
            syscallKinds: [.accept, .recv, .send, .close, .epollWait, .epollCtl, .eventfd, .other] + lingering,
            factory: EpollBackend.self),
        BackendDescriptor(
            kind: .ioUring, summary: "completion: io_uring with multishot accept/recv and a provided buffer ring", threading: .eventLoops,
            colour: "#009E73", marker: "triangle",  // bluish green
            serveOptions: ["--batch-wait", "--ring-wait-by-poll", "--ring-single-shot-recv", "--ring-buffers", "--ring-buffer-size", "--ring-entries"],
            // valgrind cannot run the server's other threads while one waits in io_uring_enter.
            countedServeOptions: ["--ring-wait-by-poll"],
            uncountableOptions: ["--batch-wait": "waits with --batch-wait inside io_uring_enter, which valgrind cannot run beside the server's other threads"],
            syscallKinds: [.ioUringEnter, .close, .eventfd, .poll, .other] + lingering,
            factory: IoUringBackend.self),
        BackendDescriptor(
            kind: .ppoll, summary: "readiness as before epoll: the same loop, the whole set passed to ppoll(2) and scanned on every wait",
            threading: .eventLoops, colour: "#56B4E9", marker: "ring",  // sky blue: readiness, like epoll
            syscallKinds: [.accept, .recv, .send, .close, .poll, .eventfd, .other] + lingering,
            factory: PPollBackend.self),
        BackendDescriptor(
            kind: .nio, summary: "SwiftNIO, the Swift ecosystem's standard runtime (a reference peer)", role: .referencePeer,
            threading: .runtime, colour: "#CC79A7", marker: "diamond",  // reddish purple
            syscallKinds: [], factory: NIOServer.self),
    ]

    /// Every backend's name, in registry order.
    public static var kinds: [BackendKind] { all.map(\.kind) }

    /// The I/O models (everything but the reference peers).
    public static var models: [BackendKind] { all.filter { !$0.isReferencePeer }.map(\.kind) }

    /// The backend called `name`, if there is one.
    public static func named(_ name: String) -> BackendDescriptor? { all.first { $0.kind.rawValue == name } }

    public static func descriptor(_ kind: BackendKind) -> BackendDescriptor {
        guard let descriptor = named(kind.rawValue) else { preconditionFailure("\(kind) is not in the backend registry") }
        return descriptor
    }

    /// "blocking, epoll, io_uring or nio", for error messages.
    public static var namesForHelp: String {
        let names = kinds.map(\.rawValue)
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }
}
