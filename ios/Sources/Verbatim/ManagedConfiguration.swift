import Foundation
import VerbatimFFI

/// The managed app configuration the MDM pushes (AppConfig: Intune, Jamf, Workspace ONE...),
/// which iOS stores in the app's standard `UserDefaults` under
/// `com.apple.configuration.managed`. Read-only for the app.
public final class ManagedConfiguration: @unchecked Sendable {
    // @unchecked: UserDefaults is documented thread-safe (not annotated Sendable before iOS 17).
    public static let key = "com.apple.configuration.managed"

    private let defaults: UserDefaults

    public init(defaults: UserDefaults = .standard) {
        self.defaults = defaults
    }

    /// The configuration as pushed, or nil when there is none: not arrived yet, or removed by
    /// the MDM. An empty dictionary counts as none (as an empty restrictions Bundle does on
    /// Android: neither platform tells "removed" from "emptied").
    public func dictionary() -> [String: Any]? {
        guard let pushed = defaults.dictionary(forKey: Self.key), !pushed.isEmpty else { return nil }
        return pushed
    }

    /// The configuration as the agent's policy tree (unsupported values left out and logged),
    /// or nil when there is none (see `dictionary()`): `ManagedAgent` then withdraws the policy
    /// in force, if any (capture fails closed, the queue keeps uploading); on a first launch
    /// the agent simply stays not configured until a configuration arrives.
    public func tree() -> PolicyValue? {
        dictionary().map(PolicyTree.from)
    }

    /// Calls `onChange` (on a private queue) when the managed configuration changes: iOS posts
    /// `UserDefaults.didChangeNotification` for it, but also for every other defaults write of
    /// the process, so notifications are debounced and `onChange` runs only when the
    /// configuration's tree differs from the one seen last (a Bool that became an Int counts).
    /// The baseline is the configuration at the time of this call. Keep the returned object:
    /// releasing it (or `cancel()`) stops the observation.
    public func observe(
        debounce: TimeInterval = 0.5,
        onChange: @escaping @Sendable () -> Void
    ) -> Observation {
        Observation(defaults: defaults, debounce: debounce, onChange: onChange)
    }

    public final class Observation: @unchecked Sendable {
        // @unchecked: `last` and `pending` are confined to `queue`; `token` and `cancelled`
        // are guarded by `lock`.
        private let queue = DispatchQueue(label: "com.verbatim.managed-configuration")
        private let lock = NSLock()
        private let defaults: UserDefaults
        private let debounce: TimeInterval
        private let onChange: @Sendable () -> Void
        private var last: PolicyValue?
        private var pending: DispatchWorkItem?
        private var token: NSObjectProtocol?
        private var cancelled = false

        init(defaults: UserDefaults, debounce: TimeInterval, onChange: @escaping @Sendable () -> Void) {
            self.defaults = defaults
            self.debounce = debounce
            self.onChange = onChange
            last = Observation.current(defaults)
            // object nil: the change of the managed configuration is not always posted with
            // the very UserDefaults instance the app holds.
            let token = NotificationCenter.default.addObserver(
                forName: UserDefaults.didChangeNotification, object: nil, queue: nil
            ) { [weak self] _ in
                self?.schedule()
            }
            lock.lock()
            self.token = token
            lock.unlock()
        }

        deinit {
            cancel()
        }

        /// Stops the observation (idempotent). A debounced check still pending does nothing.
        public func cancel() {
            lock.lock()
            let token = self.token
            self.token = nil
            cancelled = true
            lock.unlock()
            if let token {
                NotificationCenter.default.removeObserver(token)
            }
        }

        private var isCancelled: Bool {
            lock.lock()
            defer { lock.unlock() }
            return cancelled
        }

        private func schedule() {
            queue.async { [weak self] in
                guard let self else { return }
                self.pending?.cancel()
                let item = DispatchWorkItem { [weak self] in self?.check() }
                self.pending = item
                self.queue.asyncAfter(deadline: .now() + self.debounce, execute: item)
            }
        }

        private func check() {
            guard !isCancelled else { return }
            let now = Observation.current(defaults)
            guard now != last else { return }
            last = now
            onChange()
        }

        private static func current(_ defaults: UserDefaults) -> PolicyValue? {
            ManagedConfiguration(defaults: defaults).dictionary().map { PolicyTree.convert($0).tree }
        }
    }
}
