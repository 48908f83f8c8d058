package com.verbatim.agent.android

import android.app.Application
import android.app.job.JobScheduler
import android.content.Context
import android.content.RestrictionsManager
import android.net.ConnectivityManager
import android.net.NetworkCapabilities
import android.os.Bundle
import android.os.Looper
import com.verbatim.agent.policy
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.runBlocking
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.shadows.ShadowNetworkCapabilities

// Shared by the Robolectric tests of the Android layer (API 34, the real framework classes).

fun app(): Application = RuntimeEnvironment.getApplication()

/** A restrictions Bundle as the MDM pushes it: strings, booleans, integers, String[] (multi-select), nested Bundles. */
fun bundleOf(values: Map<String, Any?>): Bundle = Bundle().apply {
    for ((key, v) in values) {
        when (v) {
            null -> {}
            is String -> putString(key, v)
            is Boolean -> putBoolean(key, v)
            is Int -> putInt(key, v)
            is Long -> putInt(key, v.toInt())
            is List<*> -> putStringArray(key, v.map { it.toString() }.toTypedArray())
            is Map<*, *> -> {
                @Suppress("UNCHECKED_CAST")
                putBundle(key, bundleOf(v as Map<String, Any?>))
            }
            else -> putString(key, v.toString())
        }
    }
}

/** The policy of the facade tests, as the restrictions Bundle an MDM would push. */
fun managedPolicy(version: String, extra: Map<String, Any?> = emptyMap()): Bundle {
    val p = policy(version = version, extra = extra).toMutableMap()
    // Managed configuration types: business_lines is a string, capture_channels a multi-select.
    p["business_lines"] = (p["business_lines"] as List<*>).joinToString(",")
    p["capture_channels"] = p["capture_channels"].toString().split(",")
    return bundleOf(p)
}

fun setRestrictions(bundle: Bundle) {
    val restrictions = app().getSystemService(RestrictionsManager::class.java)
    shadowOf(restrictions).setApplicationRestrictions(bundle)
}

fun jobScheduler(): JobScheduler = app().getSystemService(JobScheduler::class.java)

/** Runs what the main looper has queued (broadcast deliveries). */
fun idleMainLooper() = shadowOf(Looper.getMainLooper()).idle()

/**
 * Polls [condition] until it holds, at most [timeout]: for work the agent finishes on its own
 * threads (a broadcast-triggered apply). No fixed sleep: returns as soon as it holds.
 */
fun eventually(timeout: Duration = 20.seconds, what: String, condition: () -> Boolean) {
    val start = TimeSource.Monotonic.markNow()
    while (!condition()) {
        if (start.elapsedNow() > timeout) throw AssertionError("not within $timeout: $what")
        idleMainLooper()
        Thread.sleep(5)
    }
}

/** Leaves AndroidAgent as a fresh process has it (the singleton outlives a test in the sandbox). */
fun resetAndroidAgent() = runBlocking {
    AndroidAgent.stop()
    AndroidAgent.platformInit = {} // the JNI init of the platform verifier exists only in Android builds
    AndroidAgent.readManagedConfig = { ManagedConfig(it).read() }
    UploadScheduler.jobIds = UploadJobIds.DEFAULT
}

fun Context.policyVersion(): String? = runBlocking { AndroidAgent.get(this@policyVersion).status().policyVersion }

/** The active network as validated, unmetered Internet: what ConnectivityNetworkState calls usable. */
fun validatedNetwork() {
    val connectivity = app().getSystemService(ConnectivityManager::class.java)
    val caps = ShadowNetworkCapabilities.newInstance()
    shadowOf(caps).apply {
        for (c in listOf(
            NetworkCapabilities.NET_CAPABILITY_INTERNET,
            NetworkCapabilities.NET_CAPABILITY_VALIDATED,
            NetworkCapabilities.NET_CAPABILITY_NOT_METERED,
            NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING,
        )) addCapability(c)
    }
    shadowOf(connectivity).setNetworkCapabilities(connectivity.activeNetwork, caps)
}
