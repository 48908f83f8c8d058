import Foundation
import os
import VerbatimFFI

/// Uploads soon after capture while the app is in the foreground, so records do not wait for a
/// background window iOS grants when it sees fit.
///
/// - `requested()` after a capture (and when the app becomes active) books one session after
///   a quiet time (`coalesce`): a burst of captures becomes one upload.
/// - One session at a time: a request while one is booked is folded into it; a request while
///   one is uploading books one more after it (as does a session that left records queued).
/// - Within policy, as the agent decides (`AgentStatus.uploadDueMs`, computed in Rust): nothing
///   without a policy or with an empty queue; never before the back-off after a passing
///   failure or the archive-key refusal wait; 30 s after the last session; after an error
///   that needs a person, the policy's upload interval. The network the policy allows is
///   checked by the agent when a session starts (`.notAllowed`, `.offline`).
/// - Only while active: `setActive(false)` (the app left the foreground) drops the booked
///   session and cancels the running one (safe at any point: nothing is deleted before the
///   archive acknowledged it); the background windows take over.
public final class ForegroundUpload: @unchecked Sendable {
    // @unchecked: every mutable property is guarded by `lock`.

    public struct Options: Sendable {
        /// Quiet time after a capture before the session starts.
        public var coalesce: TimeInterval
        /// Upload deadline of one session.
        public var deadline: TimeInterval

        public init(coalesce: TimeInterval = 2, deadline: TimeInterval = 30) {
            self.coalesce = coalesce
            self.deadline = deadline
        }
    }

    /// When a session requested at `now` may start: when the agent says an upload is due
    /// (`status.uploadDueMs`), after the quiet time; nil when the agent says none should run.
    public static func start(status: AgentStatus, now: Date, coalesce: TimeInterval) -> Date? {
        guard let due = status.uploadDueMs else { return nil }
        return max(now.addingTimeInterval(coalesce), Date(timeIntervalSince1970: TimeInterval(due) / 1_000))
    }

    /// What a session needs of the agent.
    public typealias Status = @Sendable () throws -> AgentStatus
    public typealias Upload = @Sendable (_ deadline: TimeInterval) async throws -> UploadReport

    public let options: Options
    private let status: Status
    private let upload: Upload
    private let finished: @Sendable (UploadReport) -> Void
    private static let log = Logger(subsystem: OSLogSink.defaultSubsystem, category: "foreground")

    private let lock = NSLock()
    private var active = false
    /// The booked or running session; whether it is uploading; whether a request came in
    /// while it was (then one more session follows).
    private var session: Task<Void, Never>?
    private var uploading = false
    private var again = false
    /// Bumped for every session and when the app leaves the foreground: a session that ends
    /// after it was dropped touches nothing.
    private var generation = 0

    /// `finished` runs after each session (e.g. to publish the MDM feedback).
    public init(
        options: Options = Options(),
        status: @escaping Status,
        upload: @escaping Upload,
        finished: @escaping @Sendable (UploadReport) -> Void = { _ in }
    ) {
        self.options = options
        self.status = status
        self.upload = upload
        self.finished = finished
    }

    /// The app entered (true) or left (false) the foreground. Entering requests a session
    /// (records captured in the background may be waiting); leaving drops the booked session
    /// and cancels the running one.
    public func setActive(_ isActive: Bool) {
        let dropped: Task<Void, Never>? = locked {
            active = isActive
            guard !isActive else { return nil }
            again = false
            uploading = false
            generation += 1
            defer { session = nil }
            return session
        }
        dropped?.cancel()
        if isActive {
            requested()
        }
    }

    /// Something was captured (or the app became active): book a session (it starts when the
    /// agent says an upload is due, or ends at once when none should run).
    public func requested() {
        locked {
            guard active else { return }
            guard session == nil else {
                // Booked: this capture goes with it. Uploading: it may have missed it.
                again = again || uploading
                return
            }
            generation += 1
            let id = generation
            session = Task { await self.run(id) }
        }
    }

    /// The policy changed: a new one may end a wait the old one imposed (after an error, the
    /// archive-key refusal). A booked session that has not started uploading is booked again
    /// from the agent's new answer; a running one is left alone.
    public func reconsider() {
        let dropped: Task<Void, Never>? = locked {
            guard active, let booked = session, !uploading else { return nil }
            generation += 1 // the dropped session's end touches nothing
            session = nil
            return booked
        }
        guard let dropped else { return }
        dropped.cancel()
        requested()
    }

    /// The booked or running session, if any (for tests and callers that want to wait for it).
    public var current: Task<Void, Never>? {
        locked { session }
    }

    private func run(_ id: Int) async {
        defer { sessionEnded(id) }
        guard let agentStatus = try? status(),
              let start = ForegroundUpload.start(status: agentStatus, now: Date(), coalesce: options.coalesce)
        else { return }
        let wait = min(start.timeIntervalSinceNow, 86_400) // the longest upload interval
        if wait > 0 {
            do {
                try await Task.sleep(nanoseconds: UInt64(wait * 1_000_000_000))
            } catch {
                return // cancelled: the app left the foreground
            }
        }
        let proceed: Bool = locked {
            guard id == generation, !Task.isCancelled else { return false }
            uploading = true
            return true
        }
        guard proceed else { return }
        do {
            // The agent records how the session ended: the next `uploadDueMs` follows from it.
            let report = try await upload(options.deadline)
            ForegroundUpload.log.info("foreground upload: \(String(describing: report.stopped), privacy: .public), \(report.recordsSent) records")
            if report.morePending, report.stopped == .deadline || report.stopped == .done {
                locked { again = true }
            }
            finished(report)
        } catch {
            ForegroundUpload.log.error("foreground upload: \(ManagedAgent.describe(error), privacy: .public)")
        }
    }

    /// Ends the session; books the next when a request came in meanwhile (and the app is still
    /// in the foreground: `setActive(false)` cleared both).
    private func sessionEnded(_ id: Int) {
        let next: Bool = locked {
            guard id == generation else { return false }
            session = nil
            uploading = false
            defer { again = false }
            return again && active
        }
        if next {
            requested()
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
