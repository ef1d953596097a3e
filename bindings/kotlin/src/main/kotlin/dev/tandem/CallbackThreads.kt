// CallbackThreads: the library's threads that call Kotlin stay attached to the JVM between
// calls, instead of being attached and detached by JNA for every call.

package dev.tandem

import com.sun.jna.Callback
import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native

/**
 * Keeps each library thread that calls into Kotlin (a database's notifier, a sync session's
 * event thread, the log thread, a runtime worker asking a token provider) attached to the JVM
 * from its first call on. By default JNA attaches a native thread for each callback and
 * detaches it afterwards, making a `java.lang.Thread` every time: a results notification took
 * 311 us at p50 and 8 ms at p99 that way, 194 to 196 us and 2.8 to 3.6 ms attached
 * (`bindings/kotlin/bench/run.sh --only queries`, bindings/kotlin/README.md, "Listener threads
 * stay attached"). Such a thread is a daemon thread named `tandem-callback` (it never keeps
 * the JVM from exiting), and JNA detaches it when the native thread ends.
 *
 * JNA decides whether a callback has such an initializer when the callback first crosses to
 * native code, which for these is when the library is loaded. Applied when [TandemDatabase] is
 * first used: an app whose first call into the library is anything else (`setLogListener`,
 * the untyped API) keeps JNA's default, a thread attached for each call.
 */
internal object CallbackThreads {
    /**
     * Every callback the generated bindings (`tandem.kt`) hand the library: each foreign
     * trait's methods, its `uniffiFree` and its `uniffiClone`. Listed by name, not found by
     * reflection, so that a shrinker keeps them; `CallbackThreadsTest` checks that none is
     * missing.
     */
    internal val callbacks: List<Callback> = listOf(
        uniffiCallbackInterfaceErrorListener.`onError`,
        uniffiCallbackInterfaceErrorListener.uniffiFree,
        uniffiCallbackInterfaceErrorListener.uniffiClone,
        uniffiCallbackInterfaceLogListener.`onLog`,
        uniffiCallbackInterfaceLogListener.uniffiFree,
        uniffiCallbackInterfaceLogListener.uniffiClone,
        uniffiCallbackInterfaceObjectListener.`onChange`,
        uniffiCallbackInterfaceObjectListener.uniffiFree,
        uniffiCallbackInterfaceObjectListener.uniffiClone,
        uniffiCallbackInterfaceProgressListener.`onProgress`,
        uniffiCallbackInterfaceProgressListener.uniffiFree,
        uniffiCallbackInterfaceProgressListener.uniffiClone,
        uniffiCallbackInterfaceResultsListener.`onChange`,
        uniffiCallbackInterfaceResultsListener.uniffiFree,
        uniffiCallbackInterfaceResultsListener.uniffiClone,
        uniffiCallbackInterfaceSyncStateListener.`onState`,
        uniffiCallbackInterfaceSyncStateListener.uniffiFree,
        uniffiCallbackInterfaceSyncStateListener.uniffiClone,
        uniffiCallbackInterfaceTokenProvider.`fetchToken`,
        uniffiCallbackInterfaceTokenProvider.uniffiFree,
        uniffiCallbackInterfaceTokenProvider.uniffiClone,
    )

    init {
        val keep = CallbackThreadInitializer(true, false, "tandem-callback")
        callbacks.forEach { Native.setCallbackThreadInitializer(it, keep) }
    }

    /** Makes sure the initializers are set (they are when this object is first used). */
    fun apply() = Unit
}
