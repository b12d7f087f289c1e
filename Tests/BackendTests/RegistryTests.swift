import Backends
import ServerKit
import Protocols
import BackendKit
import Readiness
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The registry and the readiness contract, without sockets.
struct RegistryTests {
    @Test func readinessBitsAreEpollsAndPolls() {
        #expect(Readiness.input == Epoll.input && Readiness.input == UInt32(POLLIN))
        #expect(Readiness.output == Epoll.output && Readiness.output == UInt32(POLLOUT))
        #expect(Readiness.error == Epoll.error && Readiness.error == UInt32(POLLERR))
        #expect(Readiness.hangUp == Epoll.hangUp && Readiness.hangUp == UInt32(POLLHUP))
    }

    @Test func everyBackendIsDescribedOnceWithItsOwnColourAndMarker() {
        let names = Backends.kinds.map(\.rawValue)
        #expect(Set(names).count == names.count)
        #expect(Set(Backends.all.map(\.colour)).count == names.count)
        #expect(Set(Backends.all.map(\.marker)).count == names.count)
        #expect(!names.contains(where: { ServerPattern(rawValue: $0) != nil }), "a backend named like a pattern: one vocabulary")
        for descriptor in Backends.all {
            #expect(Backends.named(descriptor.kind.rawValue)?.kind == descriptor.kind)
            #expect(!descriptor.syscallKinds.isEmpty || descriptor.isReferencePeer)
        }
        #expect(Backends.named("no-such-backend") == nil)
    }

    @Test func cpuCapacityFollowsThreading() {
        for descriptor in Backends.all {
            switch descriptor.threading {
            case .eventLoops: #expect(descriptor.cpuCapacity(pinned: 2, threads: 1) == 1)
            case .threadPerConnection, .runtime: #expect(descriptor.cpuCapacity(pinned: 2, threads: 1) == 2)
            }
        }
    }
}
