import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// Facts about the running process, read from `/proc/self`.
public enum ProcessResources {
    /// Open file descriptors.
    public static func openDescriptorCount() -> Int { countEntries("/proc/self/fd") - 1 /* the directory's own fd */ }

    /// What each open descriptor is (`/proc/self/fd/N`'s link: `socket:[…]`, `anon_inode:[eventfd]`, a path).
    public static func openDescriptors() -> [Int32: String] {
        guard let dir = opendir("/proc/self/fd") else { return [:] }
        let own = dirfd(dir)
        defer { closedir(dir) }
        var found: [Int32: String] = [:]
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = Int32(name), fd != own else { continue }
            var target = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(name)", &target, 255)
            found[fd] = n > 0 ? String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        return found
    }

    /// Kernel threads of this process.
    public static func threadCount() -> Int { countEntries("/proc/self/task") }

    /// Threads of this process whose name starts with `namePrefix`.
    public static func threadCount(namePrefix: String) -> Int {
        guard let dir = opendir("/proc/self/task") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard tid != ".", tid != "..", let file = fopen("/proc/self/task/\(tid)/comm", "r") else { continue }
            var buffer = [CChar](repeating: 0, count: 32)
            if fgets(&buffer, 32, file) != nil {
                let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if name.hasPrefix(namePrefix) { count += 1 }
            }
            fclose(file)
        }
        return count
    }

    private static func countEntries(_ path: String) -> Int {
        guard let dir = opendir(path) else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return count
    }

    /// Pins the calling thread, and every thread it starts afterwards, to `cpus`.
    public static func pin(to cpus: [Int]) throws(UsageError) {
        let ids = cpus.map { Int32($0) }
        let rc = ids.withUnsafeBufferPointer { iobench_pin_to_cpus($0.baseAddress, Int32($0.count)) }
        if rc != 0 {
            let allowed = iobench_allowed_cpu_count()
            throw UsageError("cannot pin to CPUs \(cpus.map(String.init).joined(separator: ",")): \(Errno.current); this machine has CPUs 0 to \(max(allowed, 1) - 1)")
        }
    }

    /// Raises the file-descriptor limit: the hard limit too, to `wanted`, where the process may
    /// (root), else the soft limit as far as the hard one allows. Returns the new soft limit.
    @discardableResult
    public static func raiseDescriptorLimit(wanted: Int = 262_144) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
        if limit.rlim_max < rlim_t(wanted) {
            var higher = limit
            higher.rlim_max = rlim_t(wanted)
            higher.rlim_cur = rlim_t(wanted)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &higher) == 0 { return wanted }
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// The kernel's id of the calling thread.
    public static func threadID() -> Int32 { iobench_gettid() }

    /// CPU time the calling thread has used, in nanoseconds.
    public static func threadCPUNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Monotonic time in nanoseconds.
    @inline(__always)
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// Writes one line to standard error (unbuffered, safe from any thread).
public func reportError(_ message: String) {
    var line = message
    line.append("\n")
    line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
