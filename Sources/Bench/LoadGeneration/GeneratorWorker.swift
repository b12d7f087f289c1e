import ResultAnalysis
import ServerKit
import Protocols
import BackendKit
import Histogram
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One load connection: its place in its own byte stream and its messages in flight.
struct LoadConnection {
    var fd: Int32
    /// Where this connection's stream starts in the two pattern tables.
    var streamStarts: (Int, Int)
    /// Stream bytes queued to send, sent, and received back (verified).
    var queuedBytes: UInt64 = 0
    var sentBytes: UInt64 = 0
    var receivedBytes: UInt64 = 0
    /// Messages queued and messages whose echo is complete.
    var queued: UInt64 = 0
    var completed: UInt64 = 0
    var writeArmed = false
    var alive = true
}

/// A generator thread: an epoll loop over its share of the connections. Closed loop keeps
/// `depth` messages in flight per connection; open loop sends on a fixed schedule of
/// `rate / threads` messages per second, round-robin over its connections, and measures
/// latency from the scheduled time.
struct GeneratorWorker {
    struct Setup: Sendable {
        let fds: [Int32]
        let firstIndex: Int
        let options: LoadOptions
        let threadCount: Int
        let stream: StreamPattern
        let counters: ThreadCounters
        let shared: SharedRun
    }

    /// Open loop: messages one connection may have in flight before the schedule has to wait.
    static let openLoopSlots = 1024

    private let setup: Setup
    private let sys: SystemCalls
    private let stream: StreamPattern
    private let shared: SharedRun
    private let wire: any MessageWire
    private let requestSize: UInt64
    private let responseSize: UInt64
    private let slots: Int
    private let openLoop: Bool
    private let connections: UnsafeMutablePointer<LoadConnection>
    private let count: Int
    /// Per connection × slot: when the message was actually queued, and when it was scheduled.
    private let sentAt: UnsafeMutablePointer<UInt64>
    private let scheduledAt: UnsafeMutablePointer<UInt64>
    private let buffer: UnsafeMutableRawPointer
    /// The stream bytes about to be sent (scratch, `receiveBuffer` bytes).
    private let expected: UnsafeMutableRawPointer
    private let events: UnsafeMutablePointer<EpollEvent>
    private var epfd: Int32 = -1
    private var outcome = WorkerOutcome()
    private var measuring = false
    /// Draining: queue nothing new; tell the controller once nothing is in flight.
    private var draining = false
    private var reportedQuiet = false
    private var drainGeneration = 0
    /// Messages queued and not yet completed, over this worker's live connections.
    private var inFlight: UInt64 = 0
    private var alive: Int
    private var schedule: OpenLoopSchedule?
    private var nextConnection = 0

    init(_ setup: Setup) {
        self.setup = setup
        sys = SystemCalls(counters: setup.counters)
        stream = setup.stream
        shared = setup.shared
        wire = setup.options.wire
        requestSize = UInt64(wire.requestSize)
        responseSize = UInt64(wire.responseSize)
        openLoop = setup.options.isOpenLoop
        slots = openLoop ? Self.openLoopSlots : setup.options.depth
        count = setup.fds.count
        alive = count
        connections = .allocate(capacity: count)
        for (i, fd) in setup.fds.enumerated() {
            let globalIndex = setup.firstIndex + i * setup.threadCount
            (connections + i).initialize(to: LoadConnection(fd: fd, streamStarts: StreamPattern.starts(forConnection: globalIndex)))
        }
        sentAt = .allocate(capacity: count * slots)
        scheduledAt = .allocate(capacity: openLoop ? count * slots : 1)
        buffer = .allocate(byteCount: LoadGenerator.receiveBuffer, alignment: 64)
        expected = .allocate(byteCount: LoadGenerator.receiveBuffer, alignment: 64)
        events = .allocate(capacity: 256)
        if openLoop {
            outcome.uncorrected = .latency()
            outcome.sendLag = .latency()
        }
    }

    mutating func run() -> WorkerOutcome {
        defer {
            for i in 0..<count where connections[i].alive { close(connections[i].fd) }
            if epfd >= 0 { close(epfd) }
            connections.deallocate(); sentAt.deallocate(); scheduledAt.deallocate()
            buffer.deallocate(); expected.deallocate(); events.deallocate()
        }
        do {
            epfd = try sys.epollCreate()
            for i in 0..<count {
                try sys.epollCtl(epfd, Epoll.add, connections[i].fd, events: Epoll.input, data: UInt64(i))
            }
        } catch {
            fail(0, "generator set-up failed: \(error)")
            return outcome
        }
        let now = ProcessResources.monotonicNanoseconds()
        if openLoop {
            schedule = OpenLoopSchedule(totalRate: setup.options.rate!, threads: setup.threadCount, index: setup.firstIndex, start: now)
        } else {
            refill(now)
        }
        var cpuStart: UInt64 = 0
        while true {
            let phase = shared.phase.load(ordering: .relaxed)
            if phase == SharedRun.stopping { break }
            if phase == SharedRun.measuring && (!measuring || draining) {
                if draining {
                    // A quiet window edge is over: fill every connection again.
                    draining = false
                    refill(ProcessResources.monotonicNanoseconds())
                }
                if !measuring {
                    measuring = true
                    cpuStart = ProcessResources.threadCPUNanoseconds()
                }
            }
            if phase == SharedRun.draining {
                let generation = shared.drainGeneration.load(ordering: .relaxed)
                if !draining || generation != drainGeneration {
                    draining = true
                    reportedQuiet = false
                    drainGeneration = generation
                    if measuring && !setup.options.quietEdges {
                        // The timed window closed: what was due in it and is not back is incomplete.
                        closeWindow(at: shared.windowEnd.load(ordering: .relaxed))
                        measuring = false
                        outcome.cpuNanoseconds = ProcessResources.threadCPUNanoseconds() - cpuStart
                    }
                }
                if !reportedQuiet && inFlight == 0 {
                    reportedQuiet = true
                    shared.quiet.wrappingAdd(1, ordering: .sequentiallyConsistent)
                }
            }
            var timeout: UInt64 = draining ? 1_000_000 : 50_000_000
            if openLoop && !draining {
                let now = ProcessResources.monotonicNanoseconds()
                dispatchDue(now)
                let due = schedule!.nextDue
                timeout = due > now ? min(due - now, timeout) : 0
            }
            let ready: Int
            do {
                ready = try sys.epollWait(epfd, events, capacity: 256, timeoutNanoseconds: timeout)
            } catch {
                fail(0, "epoll_pwait2 failed: \(error)")
                break
            }
            for e in 0..<ready {
                let i = Int(events[e].data.u64)
                guard connections[i].alive else { continue }
                if events[e].events & (Epoll.input | Epoll.hangUp | Epoll.error) != 0 {
                    receive(i)
                }
                if connections[i].alive && events[e].events & Epoll.output != 0 {
                    flush(i)
                }
            }
        }
        if measuring { outcome.cpuNanoseconds = ProcessResources.threadCPUNanoseconds() - cpuStart }
        // Every byte sent must have come back by now (the controller waited for the drain).
        for i in 0..<count where connections[i].alive && (connections[i].completed < connections[i].queued || connections[i].sentBytes < connections[i].queuedBytes) {
            let c = connections[i]
            fail(i, "connection \(setup.firstIndex + i * setup.threadCount): \(c.queued - c.completed) of the \(c.queued) messages it sent were not answered within \(setup.options.drainTimeout) s")
        }
        return outcome
    }

    /// Closed loop: `slots` messages in flight on every live connection.
    private mutating func refill(_ now: UInt64) {
        for i in 0..<count where connections[i].alive {
            while connections[i].queued - connections[i].completed < UInt64(slots) { queue(i, scheduled: now, now: now) }
            if !connections[i].writeArmed { flush(i) }
        }
    }

    /// Open loop, at the timed window's end: every message due by `end` whose echo is not back
    /// (in flight, or not yet sent because the generator fell behind) is incomplete, recorded
    /// at `end` − its scheduled time.
    private mutating func closeWindow(at end: UInt64) {
        guard openLoop else { return }
        for i in 0..<count where connections[i].alive {
            var k = connections[i].completed
            while k < connections[i].queued {
                let scheduled = scheduledAt[i * slots + Int(k % UInt64(slots))]
                if scheduled <= end {
                    outcome.latency.record(end &- scheduled)
                    outcome.incomplete += 1
                }
                k += 1
            }
        }
        while schedule!.nextDue <= end {
            outcome.latency.record(end &- schedule!.nextDue)
            outcome.incomplete += 1
            schedule!.advance()
        }
    }

    // MARK: Sending

    /// Queues one message on connection `i`.
    @inline(__always)
    private mutating func queue(_ i: Int, scheduled: UInt64, now: UInt64) {
        let c = connections + i
        let slot = i * slots + Int(c.pointee.queued % UInt64(slots))
        sentAt[slot] = now
        if openLoop {
            scheduledAt[slot] = scheduled
            if measuring { outcome.sendLag!.record(now &- scheduled) }
        }
        c.pointee.queued += 1
        c.pointee.queuedBytes += requestSize
        inFlight += 1
    }

    /// Open loop: queues every message whose time has come, round-robin over connections.
    private mutating func dispatchDue(_ now: UInt64) {
        while schedule!.nextDue <= now {
            var tries = 0
            while !connections[nextConnection].alive && tries < count {
                nextConnection = (nextConnection + 1) % count
                tries += 1
            }
            let c = connections + nextConnection
            // All of this connection's slots are in flight: the schedule waits (the lag shows it).
            guard c.pointee.alive, c.pointee.queued - c.pointee.completed < UInt64(slots) else { break }
            queue(nextConnection, scheduled: schedule!.nextDue, now: now)
            if !c.pointee.writeArmed { flush(nextConnection) }
            schedule!.advance()
            nextConnection = (nextConnection + 1) % count
        }
    }

    /// Sends queued bytes until done or the socket is full (then waits for EPOLLOUT).
    private mutating func flush(_ i: Int) {
        let c = connections + i
        while c.pointee.sentBytes < c.pointee.queuedBytes {
            let length = Int(min(c.pointee.queuedBytes - c.pointee.sentBytes, UInt64(LoadGenerator.receiveBuffer)))
            // The stream is made afresh for each send: a partial send resumes at its offset.
            wire.fillRequests(expected, count: length, payload: PayloadStream(pattern: stream, starts: c.pointee.streamStarts), offset: c.pointee.sentBytes)
            let result: IOResult
            do {
                result = try sys.send(c.pointee.fd, from: expected, count: length)
            } catch {
                fail(i, "connection \(setup.firstIndex + i * setup.threadCount): \(error)")
                return
            }
            guard case .bytes(let n) = result else {
                setWriteInterest(i, true)
                return
            }
            c.pointee.sentBytes += UInt64(n)
        }
        if c.pointee.writeArmed { setWriteInterest(i, false) }
    }

    private mutating func setWriteInterest(_ i: Int, _ on: Bool) {
        guard connections[i].writeArmed != on else { return }
        connections[i].writeArmed = on
        try? sys.epollCtl(epfd, Epoll.modify, connections[i].fd, events: Epoll.input | (on ? Epoll.output : 0), data: UInt64(i))
    }

    // MARK: Receiving

    /// One recv; verifies every byte against the connection's stream and completes messages.
    private mutating func receive(_ i: Int) {
        let c = connections + i
        let result: IOResult
        do {
            result = try sys.recv(c.pointee.fd, into: buffer, count: LoadGenerator.receiveBuffer)
        } catch {
            fail(i, "connection \(setup.firstIndex + i * setup.threadCount): \(error)")
            return
        }
        guard case .bytes(let n) = result else { return }
        if n == 0 {
            fail(i, "connection \(setup.firstIndex + i * setup.threadCount): the server closed it")
            return
        }
        sys.count(.bytesIn, UInt64(n))
        // An answer can only come for what was sent: echo byte for byte, rpc whole requests.
        let answerable = wire.answersPartially ? c.pointee.sentBytes : c.pointee.sentBytes / requestSize * responseSize
        if c.pointee.receivedBytes + UInt64(n) > answerable {
            fail(i, "connection \(setup.firstIndex + i * setup.threadCount): received \(c.pointee.receivedBytes + UInt64(n)) bytes but only \(answerable) could be answers to what it sent")
            return
        }
        if let at = wire.firstMismatch(buffer, count: n, payload: PayloadStream(pattern: stream, starts: c.pointee.streamStarts), offset: c.pointee.receivedBytes) {
            let byte = c.pointee.receivedBytes + UInt64(at)
            fail(i, "connection \(setup.firstIndex + i * setup.threadCount): byte \(byte) of its answers (message \(byte / responseSize)) is wrong (lost, duplicated, reordered, another connection's bytes, or not the expected answer)")
            return
        }
        c.pointee.receivedBytes += UInt64(n)
        let now = ProcessResources.monotonicNanoseconds()
        var finished = 0
        while c.pointee.completed < c.pointee.queued && c.pointee.receivedBytes >= (c.pointee.completed + 1) * responseSize {
            let slot = i * slots + Int(c.pointee.completed % UInt64(slots))
            if measuring {
                if openLoop {
                    outcome.latency.record(now &- scheduledAt[slot])
                    outcome.uncorrected!.record(now &- sentAt[slot])
                } else {
                    outcome.latency.record(now &- sentAt[slot])
                }
                outcome.messages += 1
            }
            c.pointee.completed += 1
            inFlight -= 1
            finished += 1
        }
        if !openLoop && !draining && finished > 0 {
            for _ in 0..<finished { queue(i, scheduled: now, now: now) }
            if !c.pointee.writeArmed { flush(i) }
        }
    }

    /// Counts an error; a connection it names is closed and no longer owes or is owed anything.
    private mutating func fail(_ i: Int, _ why: String) {
        outcome.errors += 1
        if outcome.errorDetails.count < 5 { outcome.errorDetails.append(why) }
        guard i < count, connections[i].alive else { return }
        connections[i].alive = false
        inFlight -= connections[i].queued - connections[i].completed
        close(connections[i].fd)
        alive -= 1
        shared.connectionsAlive.wrappingSubtract(1, ordering: .relaxed)
    }
}
