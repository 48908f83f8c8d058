@preconcurrency import BackgroundTasks
import Foundation
import os
import VerbatimFFI

/// The background windows the agent uploads in, from `BGTaskScheduler`:
///
/// - a `BGProcessingTaskRequest` (`requiresNetworkConnectivity = true`, `requiresExternalPower =
///   false`), earliest begin date = now + the policy's upload interval
///   (`AgentStatus.uploadSchedule`, decided in Rust); iOS grants it minutes, when it sees fit;
/// - optionally a `BGAppRefreshTaskRequest` (background mode `fetch`) on the same interval: a
///   ~30 s window iOS grants more often, for the heartbeat (`tick`) and a short upload.
///
/// iOS tasks do not repeat: each run books the next one first, so a window that expires still
/// leaves the next booked. Booking never postpones a window already booked earlier: a pending
/// request that begins no later than the new one is kept (`shouldSubmit`). Which networks are
/// allowed is the agent's call at upload time (`.notAllowed` in the report); iOS only knows
/// "needs a network".
///
/// The identifiers must be listed in the app's Info.plist under
/// `BGTaskSchedulerPermittedIdentifiers`, and registered before the app finishes launching,
/// once per process (`ManagedAgent.start` does both). `BGTaskScheduler` raises an exception
/// on a second registration of an identifier, so `register(work:)` claims its identifiers for
/// the process first and registers nothing when another `BackgroundUpload` holds one.
public final class BackgroundUpload: @unchecked Sendable {
    // @unchecked: `booking` is guarded by `lock`; everything else is immutable.
    public struct Options: Sendable {
        /// The `BGProcessingTaskRequest` identifier.
        public var processingIdentifier: String
        /// The `BGAppRefreshTaskRequest` identifier; nil: no refresh task.
        public var refreshIdentifier: String?
        /// Upload deadline inside a processing window (iOS grants minutes; it may expire the
        /// task earlier, see `BackgroundUpload.run`).
        public var processingDeadline: TimeInterval
        /// Upload deadline inside a refresh window (iOS grants about 30 s in all).
        public var refreshDeadline: TimeInterval
        /// Earliest begin of the next processing window after an upload cut short by its
        /// deadline with records left (`UploadReport.retrySoon`).
        public var retrySoonDelay: TimeInterval

        public init(
            processingIdentifier: String = "com.verbatim.upload",
            refreshIdentifier: String? = "com.verbatim.refresh",
            processingDeadline: TimeInterval = 180,
            refreshDeadline: TimeInterval = 20,
            retrySoonDelay: TimeInterval = 60
        ) {
            self.processingIdentifier = processingIdentifier
            self.refreshIdentifier = refreshIdentifier
            self.processingDeadline = processingDeadline
            self.refreshDeadline = refreshDeadline
            self.retrySoonDelay = retrySoonDelay
        }
    }

    /// What a window does: given its upload deadline, returns whether it succeeded. Runs in a
    /// Swift Task that is cancelled when iOS expires the window.
    public typealias Work = @Sendable (_ deadline: TimeInterval) async -> Bool

    /// What `register(work:)` did.
    public enum Registration: Equatable, Sendable {
        /// The handlers are registered.
        case registered
        /// These identifiers were registered already in this process (by another
        /// `BackgroundUpload`, or twice in these options): nothing was registered, since iOS
        /// raises an exception on a second registration.
        case alreadyRegistered([String])
        /// iOS refused these (not listed under `BGTaskSchedulerPermittedIdentifiers`).
        case refused([String])
    }

    public let options: Options
    private static let log = Logger(subsystem: OSLogSink.defaultSubsystem, category: "background")
    /// The identifiers registered in this process.
    static let claims = IdentifierClaims()

    private let lock = NSLock()
    private var booking: Task<Void, Never>?

    public init(options: Options = Options()) {
        self.options = options
    }

    /// The identifiers `register(work:)` registers.
    public var identifiers: [String] {
        [options.processingIdentifier] + (options.refreshIdentifier.map { [$0] } ?? [])
    }

    /// Registers the launch handlers. Call before `application(_:didFinishLaunchingWithOptions:)`
    /// returns (iOS requires it). Once per process and identifier: a second registration of an
    /// identifier registers nothing and returns `.alreadyRegistered`.
    @discardableResult
    public func register(work: @escaping Work) -> Registration {
        let taken = BackgroundUpload.claims.claim(identifiers)
        guard taken.isEmpty else {
            BackgroundUpload.log.error("\(taken.joined(separator: ", "), privacy: .public) already registered in this process: not registered again")
            return .alreadyRegistered(taken)
        }
        var refused: [String] = []
        if !register(options.processingIdentifier, deadline: options.processingDeadline, work: work) {
            refused.append(options.processingIdentifier)
        }
        if let refresh = options.refreshIdentifier,
           !register(refresh, deadline: options.refreshDeadline, work: work) {
            refused.append(refresh)
        }
        return refused.isEmpty ? .registered : .refused(refused)
    }

    private func register(_ identifier: String, deadline: TimeInterval, work: @escaping Work) -> Bool {
        let registered = BGTaskScheduler.shared.register(forTaskWithIdentifier: identifier, using: nil) { task in
            BackgroundUpload.run(task, deadline: deadline, work: work)
        }
        if !registered {
            BackgroundUpload.log.error("\(identifier, privacy: .public) is not registered: list it under BGTaskSchedulerPermittedIdentifiers in Info.plist")
        }
        return registered
    }

    /// The process-wide set of registered task identifiers.
    final class IdentifierClaims: @unchecked Sendable {
        // @unchecked: `claimed` is guarded by `lock`.
        private let lock = NSLock()
        private var claimed: Set<String> = []

        /// Claims every one of `identifiers`, or none: returns those already claimed (or
        /// repeated in `identifiers`); empty when all were claimed now.
        func claim(_ identifiers: [String]) -> [String] {
            lock.lock()
            defer { lock.unlock() }
            var seen: Set<String> = []
            let taken = identifiers.filter { claimed.contains($0) || !seen.insert($0).inserted }
            guard taken.isEmpty else { return taken }
            claimed.formUnion(identifiers)
            return []
        }
    }

    /// Books the next windows for `schedule` (the policy's; nil without a policy: cancels them).
    /// `soon`: the processing window as early as `retrySoonDelay` allows. A window already
    /// pending that begins no later than the new one stays as it is (`shouldSubmit`): the app
    /// opening, a policy push or a window booking the next must never push a booked window
    /// later. Bookings run one after the other (each reads the pending requests when it runs);
    /// the returned Task ends when this one is done.
    @discardableResult
    public func schedule(_ schedule: UploadSchedule?, soon: Bool = false, now: Date = Date()) -> Task<Void, Never> {
        var requests: [BGTaskRequest] = []
        if let schedule {
            requests.append(processingRequest(for: schedule, soon: soon, now: now))
            if let refresh = refreshRequest(for: schedule, now: now) {
                requests.append(refresh)
            }
        }
        let identifiers = self.identifiers
        let wanted = requests
        lock.lock()
        defer { lock.unlock() }
        let previous = booking
        let next = Task {
            await previous?.value
            let scheduler = BGTaskScheduler.shared
            guard !wanted.isEmpty else {
                identifiers.forEach(scheduler.cancel(taskRequestWithIdentifier:))
                return
            }
            let pending: [BGTaskRequest] = await withCheckedContinuation { done in
                scheduler.getPendingTaskRequests { done.resume(returning: $0) }
            }
            for request in wanted {
                let booked = pending.first { $0.identifier == request.identifier }
                guard BackgroundUpload.shouldSubmit(request, pending: booked) else { continue }
                do {
                    // Submitting replaces the pending request with the same identifier.
                    try scheduler.submit(request)
                } catch {
                    // Simulator, Background App Refresh off, or too many pending requests.
                    BackgroundUpload.log.error("cannot schedule \(request.identifier, privacy: .public): \(String(describing: error), privacy: .public)")
                }
            }
        }
        booking = next
        return next
    }

    /// Whether `request` should replace `pending` (the request with its identifier iOS holds
    /// now, if any): only when nothing is pending, or the pending one would begin later.
    /// A pending request with no earliest begin date runs as soon as iOS allows: kept.
    static func shouldSubmit(_ request: BGTaskRequest, pending: BGTaskRequest?) -> Bool {
        guard let pending else { return true }
        guard let booked = pending.earliestBeginDate else { return false }
        guard let wanted = request.earliestBeginDate else { return true }
        return wanted < booked
    }

    public func processingRequest(for schedule: UploadSchedule, soon: Bool, now: Date) -> BGProcessingTaskRequest {
        let request = BGProcessingTaskRequest(identifier: options.processingIdentifier)
        request.requiresNetworkConnectivity = true
        request.requiresExternalPower = false
        request.earliestBeginDate = now.addingTimeInterval(soon ? options.retrySoonDelay : BackgroundUpload.interval(schedule))
        return request
    }

    public func refreshRequest(for schedule: UploadSchedule, now: Date) -> BGAppRefreshTaskRequest? {
        guard let identifier = options.refreshIdentifier else { return nil }
        let request = BGAppRefreshTaskRequest(identifier: identifier)
        request.earliestBeginDate = now.addingTimeInterval(BackgroundUpload.interval(schedule))
        return request
    }

    static func interval(_ schedule: UploadSchedule) -> TimeInterval {
        TimeInterval(schedule.intervalMinutes) * 60
    }

    /// One window: runs `work` in a Task; when iOS expires the window, cancels that Task and
    /// completes the BGTask at once (`success: false`), so iOS does not kill the app for
    /// overrunning. Cancelling the Task reaches the upload inside Rust through
    /// `VerbatimAgent.upload`'s cancellation handler, which stops it at its next wait; safe,
    /// nothing is deleted before the archive acknowledged it.
    static func run(_ task: BGTask, deadline: TimeInterval, work: @escaping Work) {
        let window = Window(task)
        task.expirationHandler = { window.expire() }
        window.start { await work(deadline) }
    }

    /// Completes a BGTask exactly once, from whichever comes first: the work or the expiry.
    private final class Window: @unchecked Sendable {
        // @unchecked: `done` and `work` are guarded by `lock`; BGTask is thread-safe.
        private let task: BGTask
        private let lock = NSLock()
        private var done = false
        private var work: Task<Void, Never>?

        init(_ task: BGTask) {
            self.task = task
        }

        func start(_ body: @escaping @Sendable () async -> Bool) {
            let running = Task { [self] in
                let success = await body()
                complete(success: success)
            }
            lock.lock()
            let expired = done
            work = running
            lock.unlock()
            if expired {
                running.cancel()
            }
        }

        func expire() {
            lock.lock()
            let running = work
            lock.unlock()
            running?.cancel()
            BackgroundUpload.log.info("\(self.task.identifier, privacy: .public) expired by iOS")
            complete(success: false)
        }

        private func complete(success: Bool) {
            lock.lock()
            let first = !done
            done = true
            lock.unlock()
            if first {
                task.expirationHandler = nil // breaks task -> handler -> window -> task
                task.setTaskCompleted(success: success)
            }
        }
    }
}
