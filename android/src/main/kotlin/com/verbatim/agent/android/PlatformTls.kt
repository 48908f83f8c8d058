package com.verbatim.agent.android

import android.content.Context

/**
 * One-time JNI initialisation of rustls-platform-verifier, which checks the archive's
 * certificate with Android's own trust manager (so CAs the MDM installs are trusted). Must run
 * before the first upload that trusts the OS store; [AndroidAgent] calls it. Idempotent.
 *
 * The native side is `Java_com_verbatim_agent_android_PlatformTls_nativeInit` in
 * bindings/src/android.rs. The verifier's own Kotlin classes come from the
 * `org.rustls:rustls-platform-verifier` dependency (see build.gradle.kts).
 */
object PlatformTls {
    @Volatile
    private var initialised = false

    @JvmStatic
    @Synchronized
    fun init(context: Context) {
        if (initialised) return
        // JNA loads the same library for the bindings; JNI needs it registered with the VM too.
        System.loadLibrary("verbatim_ffi")
        nativeInit(context.applicationContext)
        initialised = true
    }

    @JvmStatic
    private external fun nativeInit(context: Context)
}
