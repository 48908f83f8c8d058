//! Network policy, the positive side (the refusals are covered without a server in
//! core/tests/upload_gate.rs): each network policy allows really does upload.

use verbatim_core::Value;
use verbatim_core::upload::{NetworkState, StopReason};
use verbatim_tests::*;

async fn upload_on(agent: &verbatim_core::Agent, network: NetworkState) -> verbatim_core::upload::UploadReport {
    let mut opts = upload_options(std::time::Duration::from_secs(30), RecordingPause::instant());
    opts.network = network;
    agent.upload(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_network_the_policy_allows_uploads() {
    let world = World::start().await;

    // Wi-Fi only: unmetered uploads, metered waits.
    let agent = world.device(&[("upload_network", s("unmetered"))]).await;
    let mut captured = world.capture(&agent, 81, 15).await;
    assert_eq!(upload_on(&agent, NetworkState::Metered).await.stopped, StopReason::NotAllowed);
    let r = upload_on(&agent, NetworkState::Unmetered).await;
    assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    assert!(r.records_sent > 0);

    // Any network: metered uploads; roaming still waits (roaming not allowed by default).
    agent.apply_policy(&world.policy(&[("upload_network", s("any"))])).await.unwrap();
    captured.extend(world.capture(&agent, 82, 15).await);
    assert_eq!(upload_on(&agent, NetworkState::Roaming).await.stopped, StopReason::NotAllowed);
    let r = upload_on(&agent, NetworkState::Metered).await;
    assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    assert!(r.records_sent > 0);

    // Roaming allowed: roaming uploads.
    agent
        .apply_policy(&world.policy(&[("upload_network", s("any")), ("upload_allow_roaming", Value::Bool(true))]))
        .await
        .unwrap();
    captured.extend(world.capture(&agent, 83, 15).await);
    let r = upload_on(&agent, NetworkState::Roaming).await;
    assert_eq!(r.stopped, StopReason::Done, "{r:?}");
    assert!(r.records_sent > 0);
    assert_eq!(upload_on(&agent, NetworkState::Offline).await.stopped, StopReason::Offline);

    let last_seq = agent.status().last_seq;
    assert_eq!(agent.status().queue_records, 0);
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    let applied = exported.agent_event_names().iter().filter(|n| *n == "policy_applied").count();
    assert_eq!(applied, 3, "every policy change is on record");
}
