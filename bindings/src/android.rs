//! Android only: hands the JVM and the application `Context` to rustls-platform-verifier, which
//! validates the archive's certificate with Android's own trust manager (so CAs the MDM
//! installs are trusted, and revocation is checked).
//!
//! Kotlin side: `com.verbatim.agent.android.PlatformTls.init(context)` (android/), called once
//! by `AndroidAgent.open` before any upload. It declares
//! `@JvmStatic external fun nativeInit(context: Context)` on `object PlatformTls`, which binds to
//! the symbol below. The verifier's Kotlin half (`org.rustls.platformverifier.*`) must be in the
//! APK: android/build.gradle.kts adds it from the rustls-platform-verifier Maven repository at the
//! version in Cargo.lock.

use std::sync::atomic::{AtomicBool, Ordering};

use jni::EnvUnowned;
use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JClass, JObject};

use crate::error::{Result, VerbatimError};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// `PlatformTls.nativeInit(context)`. Idempotent. A failure throws a Java `RuntimeException`
/// (the JNI convention); a panic is caught by `with_env` and thrown the same way.
#[unsafe(no_mangle)]
pub extern "system" fn Java_com_verbatim_agent_android_PlatformTls_nativeInit<'caller>(
    mut unowned_env: EnvUnowned<'caller>,
    _class: JClass<'caller>,
    context: JObject<'caller>,
) {
    unowned_env
        .with_env(|env| -> jni::errors::Result<()> {
            rustls_platform_verifier::android::init_with_env(env, context)?;
            INITIALISED.store(true, Ordering::Release);
            Ok(())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// Before an upload that trusts the OS store: the verifier would panic without the JVM handles.
/// With `archive_ca_pem` in the policy the OS store is not used, and no initialisation is needed.
pub(crate) fn check_ready(policy: Option<&verbatim_core::Policy>) -> Result<()> {
    let uses_os_store = policy.is_some_and(|p| p.archive_ca_pem.is_none());
    if uses_os_store && !INITIALISED.load(Ordering::Acquire) {
        return Err(VerbatimError::NotConfigured {
            detail: "Android TLS not initialised: call PlatformTls.init(context) (AndroidAgent.open does) before upload".into(),
        });
    }
    Ok(())
}
