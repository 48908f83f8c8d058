package com.verbatim.agent.android

import android.net.ConnectivityManager
import android.net.NetworkCapabilities
import com.verbatim.ffi.core.NetworkState
import kotlin.test.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowNetworkCapabilities

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class ConnectivityNetworkStateTest {
    private val connectivity = app().getSystemService(ConnectivityManager::class.java)

    private fun withCapabilities(vararg caps: Int): NetworkState {
        val network = connectivity.activeNetwork!!
        val nc = ShadowNetworkCapabilities.newInstance()
        shadowOf(nc).apply { caps.forEach { addCapability(it) } }
        shadowOf(connectivity).setNetworkCapabilities(network, nc)
        return ConnectivityNetworkState(app()).current()
    }

    @Test
    fun onlyAValidatedInternetNetworkIsOnline() {
        val internet = NetworkCapabilities.NET_CAPABILITY_INTERNET
        val validated = NetworkCapabilities.NET_CAPABILITY_VALIDATED
        val notMetered = NetworkCapabilities.NET_CAPABILITY_NOT_METERED
        val notRoaming = NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING
        assertEquals(NetworkState.OFFLINE, withCapabilities(internet, notRoaming, notMetered), "captive portal: not validated")
        assertEquals(NetworkState.UNMETERED, withCapabilities(internet, validated, notRoaming, notMetered))
        assertEquals(NetworkState.METERED, withCapabilities(internet, validated, notRoaming))
        assertEquals(NetworkState.ROAMING, withCapabilities(internet, validated, notMetered))
        shadowOf(connectivity).setDefaultNetworkActive(false)
        shadowOf(connectivity).setActiveNetworkInfo(null)
        assertEquals(NetworkState.OFFLINE, ConnectivityNetworkState(app()).current(), "no active network")
    }
}
