// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "iobench",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "iobench", targets: ["iobench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.2"),
    ],
    targets: [
        // C seams: liburing (only IoUring imports it) and what Glibc's module does not export.
        .systemLibrary(name: "CLibUring", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .target(name: "CSystemShims"),

        // The shared core: syscall seam, sockets, the backend protocol, sessions, counters.
        .target(name: "EchoCore", dependencies: ["CSystemShims"]),

        // The readiness event loop, on any selector (epoll, ppoll).
        .target(name: "Readiness", dependencies: ["EchoCore"]),

        // The I/O models, side by side.
        .target(name: "Blocking", dependencies: ["EchoCore", "CSystemShims"]),
        .target(name: "Epoll", dependencies: ["EchoCore", "Readiness"]),
        .target(name: "PPoll", dependencies: ["EchoCore", "Readiness"]),
        .target(name: "IoUring", dependencies: ["EchoCore", "CLibUring"]),

        // A reference peer, not a model: SwiftNIO's echo, measured beside the three.
        .target(name: "NIOPeer", dependencies: [
            "EchoCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),

        // The backend registry: every backend described once, read by the CLI and the harness.
        .target(name: "Backends", dependencies: ["EchoCore", "Blocking", "Epoll", "PPoll", "IoUring", "NIOPeer"]),

        // The harness: child server processes, load generation, measurement, reports.
        .target(name: "Bench", dependencies: [
            "EchoCore", "Backends",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),

        .executableTarget(name: "iobench", dependencies: [
            "EchoCore", "Backends", "Bench",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "EchoCoreTests", dependencies: ["EchoCore", "TestSupport"]),
        .testTarget(name: "IoUringTests", dependencies: ["IoUring"]),
        .target(name: "TestSupport", dependencies: ["EchoCore"], path: "Tests/TestSupport"),
        .testTarget(name: "BackendTests", dependencies: ["EchoCore", "Backends", "Blocking", "Epoll", "IoUring", "NIOPeer", "Readiness", "Bench", "TestSupport", "iobench"]),
        .testTarget(name: "BenchTests", dependencies: ["EchoCore", "Backends", "Blocking", "Epoll", "IoUring", "NIOPeer", "Bench", "TestSupport", "iobench"]),
    ],
    swiftLanguageModes: [.v6]
)
