#if canImport(Glibc)
import Glibc
#endif

/// An `errno` value. liburing returns `-errno` instead of setting `errno`: use
/// ``init(negatedResult:)`` for those, never read `errno` after a liburing call.
public struct Errno: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The error of a liburing / io_uring CQE result, which is `-errno`.
    public init(negatedResult result: Int32) {
        precondition(result < 0, "not an error result: \(result)")
        self.rawValue = -result
    }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let badAddress = Errno(rawValue: EFAULT)
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    public static let tooManyOpenFilesInSystem = Errno(rawValue: ENFILE)
    public static let noBuffers = Errno(rawValue: ENOBUFS)
    public static let noMemory = Errno(rawValue: ENOMEM)
    public static let cancelled = Errno(rawValue: ECANCELED)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    public static let accessDenied = Errno(rawValue: EACCES)
    public static let addressNotAvailable = Errno(rawValue: EADDRNOTAVAIL)
    public static let connectionAborted = Errno(rawValue: ECONNABORTED)
    public static let timedOut = Errno(rawValue: ETIME)
    public static let notFound = Errno(rawValue: ENOENT)

    /// Out of file descriptors, per process or system-wide.
    public var isDescriptorExhaustion: Bool { self == .tooManyOpenFiles || self == .tooManyOpenFilesInSystem }

    /// Errors that only a bug in this program can cause (a stale or wrong descriptor, a bad pointer).
    public var indicatesBug: Bool { self == .badFileDescriptor || self == .badAddress }

    /// The symbolic name, for example `ECONNRESET`, where known.
    public var name: String {
        switch rawValue {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case EINTR: "EINTR"
        case EBADF: "EBADF"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EBUSY: "EBUSY"
        case EINVAL: "EINVAL"
        case ENFILE: "ENFILE"
        case EMFILE: "EMFILE"
        case EPIPE: "EPIPE"
        case ENOSYS: "ENOSYS"
        case ENOBUFS: "ENOBUFS"
        case ECONNRESET: "ECONNRESET"
        case ECONNREFUSED: "ECONNREFUSED"
        case ECONNABORTED: "ECONNABORTED"
        case EADDRINUSE: "EADDRINUSE"
        case EADDRNOTAVAIL: "EADDRNOTAVAIL"
        case ECANCELED: "ECANCELED"
        case ETIME: "ETIME"
        case ETIMEDOUT: "ETIMEDOUT"
        case ENOTCONN: "ENOTCONN"
        case EOPNOTSUPP: "EOPNOTSUPP"
        default: "errno \(rawValue)"
        }
    }

    public var description: String {
        let message = String(cString: strerror(rawValue))
        return "\(message) (\(name))"
    }
}

/// A failed system call: which call, and why.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Errno

    public init(_ call: String, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno)" }
}
