// A thin idiomatic layer over the generated bindings (Tandem.swift): untyped change streams.
// (`Database.write { }` is in Transaction.swift; typed models in TandemObject.swift.)

import Foundation

/// Forwards result changes to an `AsyncStream` continuation, the starting results first: a
/// change the notifier delivers before `start` waits behind them.
private final class StreamingResultsListener: ResultsListener, @unchecked Sendable {
    let continuation: AsyncStream<ResultsChange>.Continuation
    private let lock = NSLock()
    private var pending: [ResultsChange]? = []  // nil once `start` ran
    init(_ continuation: AsyncStream<ResultsChange>.Continuation) { self.continuation = continuation }
    func onChange(change: ResultsChange) throws {
        lock.lock()
        defer { lock.unlock() }
        if pending != nil { pending!.append(change) } else { continuation.yield(change) }
    }
    func start(_ initial: ResultsChange) {
        lock.lock()
        defer { lock.unlock() }
        continuation.yield(initial)
        for change in pending ?? [] { continuation.yield(change) }
        pending = nil
    }
}

/// Forwards object changes to an `AsyncStream` continuation.
private final class StreamingObjectListener: ObjectListener, @unchecked Sendable {
    let continuation: AsyncStream<ObjectChange>.Continuation
    init(_ continuation: AsyncStream<ObjectChange>.Continuation) { self.continuation = continuation }
    func onChange(change: ObjectChange) throws { continuation.yield(change) }
}

extension Results {
    /// The results as an async sequence of changes: first the results the listener starts from
    /// (`observeWithInitial`: every index an insertion), then each change relative to the one
    /// before, so applying them in order never misses or doubles a commit. Ending the
    /// iteration (or cancelling its task) cancels the listener. If the query cannot be observed
    /// the stream just finishes.
    ///
    /// Changes to linked objects count up to four levels deep; `keyPaths` (e.g. `["dog.name"]`)
    /// narrows modifications to the paths named, at any depth.
    ///
    ///     for await change in results.changes() { print(change.insertions) }
    public func changes(keyPaths: [String] = []) -> AsyncStream<ResultsChange> {
        AsyncStream { continuation in
            do {
                let listener = StreamingResultsListener(continuation)
                let observation = try observeWithInitial(listener: listener, keyPaths: keyPaths)
                listener.start(observation.initial)
                let handle = observation.handle
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                continuation.finish()
            }
        }
    }
}

extension Database {
    /// The changes of one object as an async sequence; ending the iteration cancels the listener.
    /// A change reached through a link (up to four levels deep) names the link property;
    /// `keyPaths` narrows what is reported to the paths named, at any depth.
    public func changes(className: String, key: Key, keyPaths: [String] = []) throws
        -> AsyncStream<ObjectChange>
    {
        var failure: Error?
        let stream = AsyncStream<ObjectChange> { continuation in
            do {
                let handle = try observeObject(
                    className: className, key: key, listener: StreamingObjectListener(continuation),
                    keyPaths: keyPaths)
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                failure = error
                continuation.finish()
            }
        }
        if let failure { throw failure }
        return stream
    }
}
