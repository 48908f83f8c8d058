//! The network the platform says the phone is on, and whether policy lets upload use it.

use serde::{Deserialize, Serialize};

use crate::policy::{Policy, UploadNetwork};

/// What the platform's network monitor reports (NWPathMonitor, ConnectivityManager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(rename_all = "snake_case")]
pub enum NetworkState {
    Offline,
    /// Wi-Fi or Ethernet, not metered.
    Unmetered,
    /// Cellular (or a metered Wi-Fi) at home.
    Metered,
    /// Cellular while roaming.
    Roaming,
}

/// Why upload may not start on this network, if it may not.
pub fn refusal(policy: &Policy, network: NetworkState) -> Option<&'static str> {
    match network {
        NetworkState::Offline => Some("offline"),
        NetworkState::Roaming if !policy.upload_allow_roaming => Some("roaming, and upload_allow_roaming is false"),
        NetworkState::Metered | NetworkState::Roaming if policy.upload_network == UploadNetwork::Unmetered => {
            Some("metered network, and upload_network is unmetered")
        }
        _ => None,
    }
}
