package com.verbatim.agent.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.NetworkCapabilities
import android.os.Build
import com.verbatim.ffi.core.NetworkState
import com.verbatim.ffi.NetworkStateProvider

/**
 * The network as `ConnectivityManager` reports it, for the agent's upload policy (which
 * networks are allowed is decided in Rust). Needs ACCESS_NETWORK_STATE (in the manifest).
 */
class ConnectivityNetworkState(context: Context) : NetworkStateProvider {
    private val connectivity = context.applicationContext.getSystemService(ConnectivityManager::class.java)

    override fun current(): NetworkState {
        val network = connectivity.activeNetwork ?: return NetworkState.OFFLINE
        val caps = connectivity.getNetworkCapabilities(network) ?: return NetworkState.OFFLINE
        if (!caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET) ||
            !caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
        ) {
            return NetworkState.OFFLINE // no route, or a captive portal not yet passed
        }
        val roaming = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            !caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING)
        } else {
            @Suppress("DEPRECATION")
            connectivity.getNetworkInfo(network)?.isRoaming == true
        }
        if (roaming) return NetworkState.ROAMING
        val unmetered = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED) ||
            (Build.VERSION.SDK_INT >= Build.VERSION_CODES.R &&
                caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_TEMPORARILY_NOT_METERED))
        return if (unmetered) NetworkState.UNMETERED else NetworkState.METERED
    }
}
