import Foundation
import os
import VerbatimFFI
#if canImport(UIKit)
import UIKit
#endif

/// The process's one agent on iOS, and the platform glue around it (no decisions):
/// - opens it in a protected, backup-excluded directory (`DataDirectory`);
/// - applies the managed configuration at start, when it changes (`ManagedConfiguration`,
///   debounced) and when the app becomes active; with no configuration yet the agent stays not
///   configured and capture fails closed until one arrives; when the MDM removes it after a
///   policy was in force, withdraws the policy (`VerbatimAgent.withdrawPolicy`: recorded in the
///   chain, capture fails closed, the queue keeps uploading, nothing deleted) until a
///   configuration is pushed again;
/// - keeps the background upload windows booked as the policy says (`BackgroundUpload`), and
///   uploads soon after capture while the app is in the foreground (`ForegroundUpload`);
/// - writes health to the MDM feedback dictionary (`ManagedFeedback`) at start, after every
///   policy push, upload, heartbeat and agent notice;
/// - logs to the unified log (`OSLogSink`, filtered in Rust).
///
/// Call `ManagedAgent.shared.start()` from `application(_:didFinishLaunchingWithOptions:)`
/// (it registers the background tasks, which iOS requires before launch ends), then
/// `try await ManagedAgent.shared.agent()` wherever the agent is needed. There is one per
/// process (`shared`; the initializer is private): a second one would register the same
/// background-task identifiers, which iOS answers with an exception.
public final class ManagedAgent: @unchecked Sendable {
    // @unchecked: every mutable property is guarded by `lock`.
    public static let shared = ManagedAgent()

    public struct Options: Sendable {
        /// nil: `DataDirectory.defaultURL()`.
        public var directory: URL?
        /// Receives the agent's notices too (on an agent thread: return quickly).
        public var observer: AgentObserver?
        /// nil: `PathNetworkState()`.
        public var network: NetworkStateProvider?
        /// nil: no logging.
        public var logSink: LogSink?
        public var background: BackgroundUpload.Options
        /// Uploads while the app is in the foreground; nil: only in background windows.
        public var foreground: ForegroundUpload.Options?
        /// Quiet time before a changed configuration is applied.
        public var configurationDebounce: TimeInterval
        /// Where the managed configuration is read and the feedback written.
        public var defaults: UserDefaults {
            get { defaultsBox.value }
            set { defaultsBox = DefaultsBox(newValue) }
        }

        private var defaultsBox = DefaultsBox(.standard)

        public init(
            directory: URL? = nil,
            observer: AgentObserver? = nil,
            network: NetworkStateProvider? = nil,
            logSink: LogSink? = OSLogSink(),
            background: BackgroundUpload.Options = BackgroundUpload.Options(),
            foreground: ForegroundUpload.Options? = ForegroundUpload.Options(),
            configurationDebounce: TimeInterval = 0.5
        ) {
            self.directory = directory
            self.observer = observer
            self.network = network
            self.logSink = logSink
            self.background = background
            self.foreground = foreground
            self.configurationDebounce = configurationDebounce
        }
    }

    private static let log = Logger(subsystem: OSLogSink.defaultSubsystem, category: "agent")

    private let lock = NSLock()
    private var options = Options()
    private var started = false
    private var opening: Task<VerbatimAgent, Error>?
    private var applying: Task<Void, Never>?
    private var lastTree: PolicyValue?
    private var background = BackgroundUpload()
    private var foreground: ForegroundUpload?
    private var isActive = false
    private var observers: [AnyObject] = []

    private init() {}

    // MARK: Start

    /// Registers the background tasks, starts watching the managed configuration and opens the
    /// agent in the background. Call once, before the app finishes launching; later calls do
    /// nothing.
    public func start(_ options: Options = Options()) {
        let background = BackgroundUpload(options: options.background)
        let first: Bool = locked {
            guard !started else { return false }
            started = true
            self.options = options
            self.background = background
            return true
        }
        guard first else { return }
        VerbatimAgent.setLogSink(options.logSink)
        let registration = background.register { [weak self] deadline in
            await self?.runBackgroundWindow(deadline: deadline) ?? false
        }
        if registration != .registered {
            ManagedAgent.log.error("background tasks: \(String(describing: registration), privacy: .public)")
        }
        let configuration = ManagedConfiguration(defaults: options.defaults)
        let watch = configuration.observe(debounce: options.configurationDebounce) { [weak self] in
            _ = self?.applyManagedConfigurationLater()
        }
        var watching: [AnyObject] = [watch as AnyObject]
        #if canImport(UIKit)
        let center = NotificationCenter.default
        // The MDM may have pushed while the app was suspended: look again when it is used.
        let active = center.addObserver(
            forName: UIApplication.didBecomeActiveNotification, object: nil, queue: nil
        ) { [weak self] _ in
            _ = self?.applyManagedConfigurationLater()
            self?.foregroundChanged(active: true)
        }
        let inactive = center.addObserver(
            forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: nil
        ) { [weak self] _ in
            self?.foregroundChanged(active: false)
        }
        // Opening fails before the first unlock after boot (protected files): retry then.
        let unlocked = center.addObserver(
            forName: UIApplication.protectedDataDidBecomeAvailableNotification, object: nil, queue: nil
        ) { [weak self] _ in
            Task { _ = try? await self?.agent() }
        }
        watching.append(active as AnyObject)
        watching.append(inactive as AnyObject)
        watching.append(unlocked as AnyObject)
        #endif
        locked { observers = watching }
        Task { _ = try? await self.agent() }
    }

    // MARK: The agent

    /// The agent, opened on first use (once; a failed open is retried on the next call).
    public func agent() async throws -> VerbatimAgent {
        let task: Task<VerbatimAgent, Error> = locked {
            if let opening {
                return opening
            }
            let created = Task { try await self.open() }
            opening = created
            return created
        }
        do {
            return try await task.value
        } catch {
            locked {
                if opening == task {
                    opening = nil
                }
            }
            throw error
        }
    }

    private func open() async throws -> VerbatimAgent {
        let options: Options = locked { self.options }
        let directory = try options.directory ?? DataDirectory.defaultURL()
        let forward = options.observer
        let observer = ClosureAgentObserver { [weak self] notice in
            // After a change: republish health (and reschedule on a new policy), off the
            // agent's thread; then the app's own observer.
            Task { await self?.afterNotice(notice) }
            try? forward?.onEvent(notice: notice)
        }
        do {
            let agent = try await VerbatimAgent.open(
                directory: directory,
                network: options.network ?? PathNetworkState(),
                observer: observer
            )
            await applyManagedConfiguration(to: agent)
            reschedule(agent)
            publishFeedback(agent)
            startForegroundUploads(agent, options.foreground)
            return agent
        } catch {
            ManagedAgent.log.error("agent did not open: \(ManagedAgent.describe(error), privacy: .public)")
            throw error
        }
    }

    // MARK: Managed configuration

    /// Re-reads the managed configuration and applies it if it changed since the last push.
    /// Applications run one after the other; each reads the configuration when it runs.
    public func applyManagedConfiguration() async {
        await applyManagedConfigurationLater().value
    }

    @discardableResult
    private func applyManagedConfigurationLater() -> Task<Void, Never> {
        locked {
            let previous = applying
            let next = Task {
                await previous?.value
                guard let agent = try? await self.agent() else { return }
                await self.applyManagedConfiguration(to: agent)
            }
            applying = next
            return next
        }
    }

    private func applyManagedConfiguration(to agent: VerbatimAgent) async {
        let configuration = ManagedConfiguration(defaults: locked { options.defaults })
        guard let tree = configuration.tree() else {
            await withdrawPolicy(from: agent)
            return
        }
        let changed: Bool = locked {
            guard tree != lastTree else { return false }
            lastTree = tree
            return true
        }
        guard changed else { return }
        do {
            let warnings = try await agent.applyPolicy(tree)
            if !warnings.isEmpty {
                let keys = ManagedAgent.describe(warnings)
                ManagedAgent.log.warning("policy warnings: \(keys, privacy: .public)")
            }
        } catch VerbatimError.PolicyRejected(_, let problems) {
            // The agent recorded it and notified the observer; the MDM sees it in the feedback.
            let keys = ManagedAgent.describe(problems)
            ManagedAgent.log.error("managed configuration rejected: \(keys, privacy: .public)")
        } catch {
            // Not applied (storage, closed): try again at the next change or activation.
            locked { lastTree = nil }
            ManagedAgent.log.error("managed configuration not applied: \(ManagedAgent.describe(error), privacy: .public)")
        }
        publishFeedback(agent)
    }

    /// No managed configuration: removed by the MDM after a policy was in force (the agent
    /// records `policy_withdrawn` and refuses capture; the queue keeps uploading), or none yet
    /// (nothing to withdraw: the agent says so and records nothing). Asked at every start,
    /// change and activation: the removal may have happened while the app was not running.
    private func withdrawPolicy(from agent: VerbatimAgent) async {
        // A configuration pushed again, even the same one, must be applied again to resume.
        locked { lastTree = nil }
        do {
            guard try await agent.withdrawPolicy() else {
                ManagedAgent.log.info("no managed configuration: capture is refused until the MDM pushes one")
                return
            }
            ManagedAgent.log.error("managed configuration removed: policy withdrawn, capture refused, queued records keep uploading")
        } catch {
            // Not recorded (storage, closed): asked again at the next change or activation.
            ManagedAgent.log.error("policy not withdrawn: \(ManagedAgent.describe(error), privacy: .public)")
        }
        reschedule(agent)
        publishFeedback(agent)
    }

    // MARK: Feedback and scheduling

    /// Writes the agent's health to the MDM feedback dictionary (memory only: cheap).
    public func publishFeedback() async {
        guard let agent = try? await agent() else { return }
        publishFeedback(agent)
    }

    private func publishFeedback(_ agent: VerbatimAgent) {
        do {
            ManagedFeedback(defaults: locked { options.defaults }).publish(try agent.feedback())
        } catch {
            ManagedAgent.log.error("feedback not written: \(ManagedAgent.describe(error), privacy: .public)")
        }
    }

    /// Books the next background windows; only after `start` registered their handlers (iOS
    /// ends an app launched for a task it has no handler for).
    private func reschedule(_ agent: VerbatimAgent, soon: Bool = false) {
        guard let background: BackgroundUpload = locked({ started ? self.background : nil }) else { return }
        background.schedule((try? agent.status())?.uploadSchedule, soon: soon)
    }

    /// Uploads after captures while the app is active (`ForegroundUpload`), from the agent's
    /// first open on.
    private func startForegroundUploads(_ agent: VerbatimAgent, _ options: ForegroundUpload.Options?) {
        guard let options else { return }
        let uploads = ForegroundUpload(
            options: options,
            status: { try agent.status() },
            upload: { deadline in try await agent.upload(deadline: deadline) },
            finished: { [weak self] _ in self?.publishFeedback(agent) }
        )
        agent.captured.set { [weak uploads] in uploads?.requested() }
        // Under the lock, like `foregroundChanged`: the two never apply states out of order
        // (ForegroundUpload never calls back into this lock).
        locked {
            foreground = uploads
            uploads.setActive(isActive)
        }
    }

    private func foregroundChanged(active: Bool) {
        locked {
            isActive = active
            foreground?.setActive(active)
        }
    }

    private func afterNotice(_ notice: AgentNotice) async {
        guard let agent = try? await agent() else { return }
        if case .policyApplied = notice {
            reschedule(agent)
            locked { foreground }?.reconsider()
        }
        publishFeedback(agent)
    }

    /// One background window: heartbeat, then upload within `deadline`. The next window is
    /// booked first, so an expired window still leaves one.
    private func runBackgroundWindow(deadline: TimeInterval) async -> Bool {
        let agent: VerbatimAgent
        do {
            agent = try await self.agent()
        } catch {
            return false
        }
        reschedule(agent)
        defer { publishFeedback(agent) }
        do {
            try await agent.tick()
            try Task.checkCancellation()
            let report = try await agent.upload(deadline: deadline)
            let stopped = String(describing: report.stopped)
            ManagedAgent.log.info("upload: \(stopped, privacy: .public), \(report.recordsSent) records, acked through \(report.ackedThrough)")
            if report.retrySoon {
                reschedule(agent, soon: true)
            }
            return report.stopped != .error
        } catch is CancellationError {
            return false
        } catch {
            // Typed and metadata-only; the next window tries again.
            ManagedAgent.log.error("background window: \(ManagedAgent.describe(error), privacy: .public)")
            return false
        }
    }

    // MARK: Helpers

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Problems for the log: key and kind only (never a value).
    static func describe(_ problems: [PolicyProblem]) -> String {
        problems.map { "\($0.key): \($0.kind)" }.joined(separator: ", ")
    }

    /// An error's kind for the log: never its detail, which may quote the app's own text.
    static func describe(_ error: Error) -> String {
        if let error = error as? VerbatimError {
            return "\(error.kind())"
        }
        return String(describing: type(of: error))
    }
}

/// `UserDefaults` is thread-safe but not annotated `Sendable` before iOS 17.
private struct DefaultsBox: @unchecked Sendable {
    let value: UserDefaults

    init(_ value: UserDefaults) {
        self.value = value
    }
}
