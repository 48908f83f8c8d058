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
/// leaves the next booked. Which networks are allowed is the agent's call at upload time
/// (`.notAllowed` in the report); iOS only knows "needs a network".
///
/// The identifiers must be listed in the app's Info.plist under
/// `BGTaskSchedulerPermittedIdentifiers`, and registered before the app finishes launching
/// (`ManagedAgent.start` does both calls).
public final class BackgroundUpload: Sendable {
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

    public let options: Options
    private static let log = Logger(subsystem: OSLogSink.defaultSubsystem, category: "background")

    public init(options: Options = Options()) {
        self.options = options
    }

    /// Registers the launch handlers. Call before `application(_:didFinishLaunchingWithOptions:)`
    /// returns (iOS requires it), once per process.
    public func register(work: @escaping Work) {
        register(options.processingIdentifier, deadline: options.processingDeadline, work: work)
        if let refresh = options.refreshIdentifier {
            register(refresh, deadline: options.refreshDeadline, work: work)
        }
    }

    private func register(_ identifier: String, deadline: TimeInterval, work: @escaping Work) {
        let registered = BGTaskScheduler.shared.register(forTaskWithIdentifier: identifier, using: nil) { task in
            BackgroundUpload.run(task, deadline: deadline, work: work)
        }
        if !registered {
            BackgroundUpload.log.error("\(identifier, privacy: .public) is not registered: list it under BGTaskSchedulerPermittedIdentifiers in Info.plist")
        }
    }

    /// Books the next windows for `schedule` (the policy's; nil without a policy: cancels them).
    /// `soon`: the processing window as early as `retrySoonDelay` allows.
    public func schedule(_ schedule: UploadSchedule?, soon: Bool = false, now: Date = Date()) {
        let scheduler = BGTaskScheduler.shared
        guard let schedule else {
            scheduler.cancel(taskRequestWithIdentifier: options.processingIdentifier)
            if let refresh = options.refreshIdentifier {
                scheduler.cancel(taskRequestWithIdentifier: refresh)
            }
            return
        }
        var requests: [BGTaskRequest] = [processingRequest(for: schedule, soon: soon, now: now)]
        if let refresh = refreshRequest(for: schedule, now: now) {
            requests.append(refresh)
        }
        for request in requests {
            do {
                // Submitting replaces the pending request with the same identifier.
                try scheduler.submit(request)
            } catch {
                // Simulator, Background App Refresh off, or too many pending requests.
                BackgroundUpload.log.error("cannot schedule \(request.identifier, privacy: .public): \(String(describing: error), privacy: .public)")
            }
        }
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
