@_exported import VerbatimFFI
import Foundation

/// The Verbatim capture agent for Swift callers: a thin facade over the generated bindings
/// (`VerbatimFFI.Agent`). Every decision (scope, validation, sealing, queueing, upload policy)
/// is taken in Rust; this type adapts types and prepares the data directory, nothing more.
///
/// Threading: every `async` method may be called from any context, the main actor included:
/// the work runs on the agent's own threads while the caller is suspended; no thread blocks.
/// `status()`, `feedback()` and `disclaimerDue(channel:conversationId:)` read memory only.
///
/// Errors: `VerbatimError`, one case per kind (`.NotConfigured`, `.PolicyRejected(detail:problems:)`,
/// `.InvalidEvent`, `.QueueFull`, ...); `error.kind()` gives the `ErrorKind` of any of them.
/// Details never quote captured content.
public final class VerbatimAgent: Sendable {
    /// The generated object, for anything this facade does not cover.
    public let ffi: Agent
    /// The agent's data directory (see `DataDirectory`).
    public let directory: URL
    /// Told after every capture that stored something (`ManagedAgent` books a foreground
    /// upload with it).
    let captured = CaptureHook()

    private init(ffi: Agent, directory: URL) {
        self.ffi = ffi
        self.directory = directory
    }

    /// Opens (or creates) the agent's store in `directory` and re-applies the policy stored by
    /// an earlier run. The directory is created first with the protection class
    /// `completeUntilFirstUserAuthentication` (capture and upload keep working while the phone
    /// is locked, after the first unlock since boot) and excluded from backups.
    ///
    /// Without a policy (first launch, no managed configuration yet) the agent opens "not
    /// configured": captures throw `VerbatimError.NotConfigured` until a policy is applied.
    public static func open(
        directory: URL,
        network: NetworkStateProvider,
        observer: AgentObserver? = nil
    ) async throws -> VerbatimAgent {
        try DataDirectory.prepare(directory)
        let agent = try await Agent.open(dataDir: directory.path, network: network, observer: observer)
        return VerbatimAgent(ffi: agent, directory: directory)
    }

    /// Sets (or with nil removes) the process's log sink, e.g. `OSLogSink()`. Records below the
    /// policy's `log_level` are dropped in Rust and never reach it.
    public static func setLogSink(_ sink: LogSink?) {
        VerbatimFFI.setLogSink(sink: sink)
    }

    /// Validates a managed configuration without applying it (no agent needed).
    public static func checkPolicy(_ configuration: [String: Any]) throws -> PolicyCheck {
        try VerbatimFFI.checkPolicy(tree: PolicyTree.from(configuration))
    }

    /// The agent library's version.
    public static var version: String { agentVersion() }

    // MARK: Policy

    /// Applies a managed configuration (see `PolicyTree` for the value types). Returns the
    /// warnings of an accepted policy; throws `VerbatimError.PolicyRejected` listing every
    /// problem by key, and the policy in force stays.
    public func applyPolicy(_ configuration: [String: Any]) async throws -> [PolicyProblem] {
        let tree = PolicyTree.from(configuration)
        return try await ffi.applyPolicy(tree: tree)
    }

    public func applyPolicy(_ tree: PolicyValue) async throws -> [PolicyProblem] {
        try await ffi.applyPolicy(tree: tree)
    }

    /// The MDM removed the managed configuration (`ManagedAgent` calls this when it finds none
    /// after a policy was in force). Records a `policy_withdrawn` event in the chain; capture
    /// then fails closed with `VerbatimError.NotConfigured` (the app blocks business sending)
    /// while what is queued keeps uploading under the withdrawn policy's archive settings.
    /// Nothing is deleted; `applyPolicy` (even with the same configuration) resumes capture.
    /// Returns false, recording nothing, when no policy is in force or it was withdrawn already.
    @discardableResult
    public func withdrawPolicy() async throws -> Bool {
        try await ffi.withdrawPolicy()
    }

    // MARK: Capture (each returns once the event is durable, or dropped as out of scope)

    public func capture(_ event: MessageEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureMessage(event: event))
    }

    public func capture(_ event: EditEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureEdit(event: event))
    }

    public func capture(_ event: UnsendEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureUnsend(event: event))
    }

    public func capture(_ event: ReactionEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureReaction(event: event))
    }

    /// Streams the file at `event.path` (a path the app can read) in bounded chunks.
    public func capture(_ event: AttachmentEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureAttachment(event: event))
    }

    /// With the recording at `event.recordingPath`, if any.
    public func capture(_ event: CallEvent) async throws -> CaptureOutcome {
        try await stored(ffi.captureCall(event: event))
    }

    /// The client notice to show or send in this conversation now, if the policy says it is due.
    public func disclaimerDue(channel: Channel, conversationId: String) throws -> String? {
        try ffi.disclaimerDue(channel: channel, conversationId: conversationId)
    }

    /// The app showed or sent the client notice: captured in the conversation.
    public func disclaimerShown(_ meta: EventMeta) async throws -> CaptureOutcome {
        try await stored(ffi.disclaimerShown(meta: meta))
    }

    /// The app let a communication through while capture was unavailable (only when the
    /// policy's `fail_closed` is false): recorded, metadata only.
    public func reportUncaptured(_ meta: EventMeta, direction: Direction, reason: String) async throws {
        try await ffi.reportUncaptured(meta: meta, direction: direction, reason: reason)
        captured.fire()
    }

    private func stored(_ outcome: CaptureOutcome) -> CaptureOutcome {
        if case .captured = outcome {
            captured.fire()
        }
        return outcome
    }

    // MARK: Upload and housekeeping

    /// Uploads within `deadline` seconds on the network the provider reports. Network and
    /// archive trouble is in the report (`stopped`), not thrown.
    ///
    /// Cancelling the calling Task stops the Rust upload at its next wait (UniFFI 0.32's Swift
    /// bindings do not pass cancellation to Rust, uniffi-rs#2771, so this asks the agent to
    /// cancel); the call then returns a report with `stopped == .cancelled`. An upload cut
    /// short at any point is safe: nothing is deleted before the archive acknowledged it.
    public func upload(deadline: TimeInterval) async throws -> UploadReport {
        try await withTaskCancellationHandler {
            try await ffi.upload(deadlineMs: Self.milliseconds(deadline))
        } onCancel: { [ffi] in
            try? ffi.cancelUpload()
        }
    }

    /// Stops the upload running now, if any, at its next wait. From memory: safe on the main
    /// thread.
    public func cancelUpload() throws {
        try ffi.cancelUpload()
    }

    /// Records what is due (heartbeat, stale-pending alert). Background tasks call it.
    public func tick() async throws {
        try await ffi.tick()
    }

    /// Everything about the agent, from memory: safe on the main thread.
    public func status() throws -> AgentStatus {
        try ffi.status()
    }

    /// The agent's health for the MDM (see `ManagedFeedback`), from memory.
    public func feedback() throws -> [FeedbackItem] {
        try ffi.feedback()
    }

    /// Leaves the device: uploads within `deadline` seconds, then destroys the local store once
    /// the archive acknowledged everything; with `force` (selective wipe) regardless.
    public func unenroll(deadline: TimeInterval, force: Bool) async throws -> UnenrollReport {
        try await ffi.unenroll(deadlineMs: Self.milliseconds(deadline), force: force)
    }

    /// Records a clean stop and releases the store; later calls throw `VerbatimError.Closed`.
    public func shutdown() async throws {
        try await ffi.shutdown()
    }

    /// Seconds to whole milliseconds, clamped to [0, one year] (NaN: 0).
    static func milliseconds(_ seconds: TimeInterval) -> UInt64 {
        guard !seconds.isNaN, seconds > 0 else { return 0 }
        return UInt64(min(seconds, 365 * 86_400) * 1_000)
    }
}

/// A closure called after a capture stored something (set once the agent is open).
final class CaptureHook: @unchecked Sendable {
    // @unchecked: `block` is guarded by `lock`.
    private let lock = NSLock()
    private var block: (@Sendable () -> Void)?

    func set(_ block: (@Sendable () -> Void)?) {
        lock.lock()
        self.block = block
        lock.unlock()
    }

    func fire() {
        lock.lock()
        let block = self.block
        lock.unlock()
        block?()
    }
}

// MARK: - Callbacks from closures

/// A `NetworkStateProvider` from a closure (asked once per upload, on an agent thread).
public final class ClosureNetworkState: NetworkStateProvider {
    private let block: @Sendable () -> NetworkState

    public init(_ block: @escaping @Sendable () -> NetworkState) {
        self.block = block
    }

    public func current() -> NetworkState {
        block()
    }
}

/// An `AgentObserver` from a closure. Called on an agent thread after the change: return
/// quickly (hop to your own actor or queue).
public final class ClosureAgentObserver: AgentObserver {
    private let block: @Sendable (AgentNotice) -> Void

    public init(_ block: @escaping @Sendable (AgentNotice) -> Void) {
        self.block = block
    }

    public func onEvent(notice: AgentNotice) {
        block(notice)
    }
}
