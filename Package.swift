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

        // The server kit: the syscall seam, Errno, sockets, counters, the connection table,
        // loop groups, timers and notes, threads. Knows no protocol and no backend.
        .target(name: "ServerKit", dependencies: ["CSystemShims"]),
        // The protocols, sans I/O: the session protocol, every session, the frame codec, the hub.
        .target(name: "Protocols", dependencies: ["ServerKit"]),
        // What a backend is and the parts every backend shares: its description and
        // configuration, the server protocol, the event-loop server skeleton, the stats line.
        .target(name: "BackendKit", dependencies: ["ServerKit", "Protocols"]),
        // Exercises of the sessions shared by the fuzz targets and the tests.
        .target(name: "ProtocolTesting", dependencies: ["ServerKit", "Protocols"]),

        // The readiness event loop, on any selector (epoll, ppoll).
        .target(name: "Readiness", dependencies: ["ServerKit", "Protocols", "BackendKit"]),

        // The I/O models, side by side.
        .target(name: "Blocking", dependencies: ["ServerKit", "Protocols", "BackendKit", "CSystemShims"]),
        .target(name: "Epoll", dependencies: ["ServerKit", "Protocols", "BackendKit", "Readiness"]),
        .target(name: "PPoll", dependencies: ["ServerKit", "Protocols", "BackendKit", "Readiness"]),
        .target(name: "IoUring", dependencies: ["ServerKit", "Protocols", "BackendKit", "CLibUring"]),

        // A reference peer, not a model: SwiftNIO's echo, measured beside the three.
        .target(name: "NIOPeer", dependencies: [
            "ServerKit", "Protocols", "BackendKit",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),

        // The backend registry: every backend described once, read by the CLI and the harness.
        .target(name: "Backends", dependencies: ["ServerKit", "Protocols", "BackendKit", "Blocking", "Epoll", "PPoll", "IoUring", "NIOPeer"]),

        // The harness, in four modules by job (folders under Sources/Bench):
        // what a row of results is and how rows are judged: statistics, the metric registry,
        // result rows and their CSV, the regression check, the harness's error family.
        .target(name: "ResultAnalysis", dependencies: ["Backends"], path: "Sources/Bench/ResultAnalysis"),
        // Load generation: clients, workloads and their wires, drivers, verification of every
        // answer byte, the /proc probe a driver samples at its window's edges.
        .target(name: "LoadGeneration", dependencies: [
            "ServerKit", "Protocols", "BackendKit", "CSystemShims", "ResultAnalysis",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ], path: "Sources/Bench/LoadGeneration"),
        // Reporting: tables, charts, the HTML page, the regression check's report.
        .target(name: "ResultReporting", dependencies: ["Backends", "ResultAnalysis"], path: "Sources/Bench/ResultReporting"),
        // The runner: server processes, probes, counted runs under callgrind, the matrices,
        // baselines and the paired A/B.
        .target(name: "BenchRunner", dependencies: [
            "ServerKit", "Protocols", "BackendKit", "Backends", "LoadGeneration", "ResultAnalysis", "ResultReporting",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ], path: "Sources/Bench/BenchRunner"),

        .executableTarget(name: "iobench", dependencies: [
            "ServerKit", "Protocols", "BackendKit", "Backends", "IoUring", "BenchRunner", "LoadGeneration", "ResultAnalysis", "ResultReporting",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "CoreTests", dependencies: ["ServerKit", "Protocols", "BackendKit", "ProtocolTesting", "TestSupport"]),
        .testTarget(name: "IoUringTests", dependencies: ["IoUring"]),
        .target(name: "TestSupport", dependencies: ["ServerKit", "Protocols", "BackendKit"], path: "Tests/TestSupport"),
        .testTarget(name: "BackendTests", dependencies: ["ServerKit", "Protocols", "BackendKit", "Backends", "Blocking", "Epoll", "IoUring", "NIOPeer", "Readiness", "BenchRunner", "LoadGeneration", "ResultAnalysis", "ResultReporting", "TestSupport", "iobench"]),
        .testTarget(name: "BenchTests", dependencies: ["ServerKit", "Protocols", "BackendKit", "Backends", "Blocking", "Epoll", "IoUring", "NIOPeer", "BenchRunner", "LoadGeneration", "ResultAnalysis", "ResultReporting", "TestSupport", "iobench"]),
    ],
    swiftLanguageModes: [.v6]
)
