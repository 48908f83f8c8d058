package com.verbatim.agent.android

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlinx.coroutines.runBlocking
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config

/**
 * Run in its own JVM (pom.xml, execution `native-library-missing`) with jna.library.path and
 * java.library.path pointing where libverbatim_ffi.so is not: as on a device whose APK lacks the
 * library for its ABI. The app must get a typed "capture unavailable" state, never a crash.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class NativeLibraryMissingTest {
    @Test
    fun aMissingNativeLibraryIsReportedAsCaptureUnavailable() = runBlocking {
        // Only meaningful in the JVM set up for it (a run filtered by name may land it elsewhere).
        assumeTrue(System.getProperty("jna.library.path").orEmpty().endsWith("no-native-library"))
        // JNA cannot find the library when the bindings first load it.
        AndroidAgent.platformInit = {}
        AndroidAgent.start(app()) // the background open must not crash the process
        repeat(2) {
            val e = assertFailsWith<CaptureUnavailableException> { AndroidAgent.get(app()) }
            assertEquals(UnavailableReason.NATIVE_LIBRARY, e.reason)
        }
        val state = assertIs<AgentState.CaptureUnavailable>(AndroidAgent.state)
        assertEquals(UnavailableReason.NATIVE_LIBRARY, state.reason)
        AndroidAgent.stop()
        assertIs<AgentState.NotStarted>(AndroidAgent.state)

        // The real PlatformTls (System.loadLibrary, then the JNI symbol): UnsatisfiedLinkError.
        AndroidAgent.platformInit = PlatformTls::init
        AndroidAgent.start(app())
        assertEquals(UnavailableReason.NATIVE_LIBRARY, assertFailsWith<CaptureUnavailableException> { AndroidAgent.get(app()) }.reason)
        AndroidAgent.stop()

        // Started again after the bindings' class initialisation failed for good
        // (NoClassDefFoundError from then on): still the typed state.
        AndroidAgent.platformInit = {}
        AndroidAgent.start(app())
        assertEquals(UnavailableReason.NATIVE_LIBRARY, assertFailsWith<CaptureUnavailableException> { AndroidAgent.get(app()) }.reason)
        assertIs<AgentState.CaptureUnavailable>(AndroidAgent.state)
        AndroidAgent.stop()
    }
}
