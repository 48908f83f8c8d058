//! The Google Messages archival source: one wake-up's view of the Telephony provider in, the
//! difference from the previous view out as events. Fixtures follow what was observed on a
//! fully managed phone: SMS dates in milliseconds, MMS/RCS dates in seconds, RCS rows with
//! `ct_cls` 135, senders in `addr` type 137, edits as new rows, deletions without tombstones.

mod support;

use std::path::PathBuf;

use support::*;
use verbatim_core::model::{Channel, Direction};
use verbatim_core::record::RecordBody;
use verbatim_core::sources::telephony::{Addr, MmsRow, Part, ProviderView, ScanOptions, ScanReport, SmsRow, scan};
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::{Agent, ErrorKind};

const NOW: i64 = 1_779_656_400_000; // 2026-05-24
const PEER: &str = "+15555550111";
const PEER2: &str = "+15555550122";

fn sms(id: i64, kind: i64, body: &str, at_ms: i64) -> SmsRow {
    SmsRow { id, thread_id: 2, address: Some(PEER.into()), date: at_ms, kind, body: Some(body.into()) }
}

fn text_part(id: i64, text: &str) -> Part {
    Part { id, ct: "text/plain".into(), text: Some(text.into()), name: None, file_name: None, data: None, file: None }
}

fn media_part(id: i64, ct: &str, name: &str, file: PathBuf) -> Part {
    Part {
        id,
        ct: ct.into(),
        text: None,
        name: Some(name.into()),
        file_name: None,
        data: Some(format!("/data/user/0/com.android.providers.telephony/app_parts/PART_{id}")),
        file: Some(file),
    }
}

/// An RCS row (`ct_cls` 135) in thread 3; received rows come from `from`.
fn rcs(id: i64, msg_box: i64, from: &str, to: &[&str], at_s: i64, parts: Vec<Part>) -> MmsRow {
    let mut addr = vec![Addr { address: from.into(), kind: 137 }];
    addr.extend(to.iter().map(|a| Addr { address: (*a).into(), kind: 151 }));
    MmsRow { id, thread_id: 3, date: at_s, msg_box, ct_cls: Some(135), ct_t: Some("text/plain".into()), parts, addr }
}

/// `(kind, id)` of the events a scan captured, in order.
fn pairs(r: &ScanReport) -> Vec<(&str, String)> {
    r.events.iter().map(|e| (e.kind.as_str(), e.id.clone())).collect()
}

fn opts() -> ScanOptions {
    ScanOptions { line: BUSINESS_LINE.into(), backfill_days: 0, now_ms: NOW }
}

async fn configured(s: &Setup) -> Agent {
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    agent
}

/// Captured bodies in chain order, as the archive will read them.
fn archived(s: &Setup) -> Vec<RecordBody> {
    open_all(s).into_iter().map(|(_, r)| r.body).filter(|b| !matches!(b, RecordBody::Agent(_))).collect()
}

#[tokio::test]
async fn the_first_scan_takes_a_baseline_then_only_new_rows_are_captured() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let mut view = ProviderView { sms: vec![sms(1, 1, "old history", NOW - 86_400_000)], mms: vec![] };
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!((r.baseline, r.events.len()), (1, 0), "history is not captured: {r:?}");

    // A received SMS, a sent one, a draft (not yet a communication).
    view.sms.push(sms(2, 1, "in", NOW - 5000));
    view.sms.push(sms(3, 2, "out", NOW - 4000));
    view.sms.push(sms(4, 3, "draft", NOW - 3000));
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("message", "sms:2".to_string()), ("message", "sms:3".to_string())]);

    // Repeated wake-ups, a read receipt, the draft still a draft: nothing.
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert!(r.events.is_empty() && r.unchanged == 3, "{r:?}");

    // The draft is sent: the same row, now type 2, is a new communication.
    view.sms[3].kind = 2;
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("message", "sms:4".to_string())]);

    let bodies = archived(&s);
    let messages: Vec<_> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Message(m) => {
                Some((m.meta.source_id.clone(), m.direction, m.sender.clone(), m.recipients.clone(), m.meta.channel))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("sms:2".into(), Direction::Inbound, PEER.into(), vec![BUSINESS_LINE.to_string()], Channel::Sms),
            ("sms:3".into(), Direction::Outbound, BUSINESS_LINE.into(), vec![PEER.to_string()], Channel::Sms),
            ("sms:4".into(), Direction::Outbound, BUSINESS_LINE.into(), vec![PEER.to_string()], Channel::Sms),
        ]
    );
}

#[tokio::test]
async fn backfill_days_captures_recent_history_on_the_first_scan_only() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let view = ProviderView {
        sms: vec![sms(1, 1, "last month", NOW - 30 * 86_400_000), sms(2, 1, "yesterday", NOW - 86_400_000)],
        mms: vec![],
    };
    let r = scan(&agent, &view, &ScanOptions { backfill_days: 7, ..opts() }).await.unwrap();
    assert_eq!(r.baseline, 1);
    assert_eq!(pairs(&r), [("message", "sms:2".to_string())]);
}

#[tokio::test]
async fn rcs_groups_media_locations_edits_reactions_and_deletions() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let mut view = ProviderView::default();
    scan(&agent, &view, &opts()).await.unwrap(); // empty baseline
    let t = NOW / 1000 - 60;
    let photo = s.files.path().join("photo.jpg");
    std::fs::write(&photo, vec![7u8; 30_000]).unwrap();
    let voice = s.files.path().join("voice.m4a");
    std::fs::write(&voice, vec![9u8; 12_000]).unwrap();

    // A received RCS group message with a photo; members from the addr rows.
    view.mms.push(rcs(
        10,
        1,
        PEER,
        &[BUSINESS_LINE, PEER2],
        t,
        vec![text_part(100, "Quarterly numbers attached"), media_part(101, "image/jpeg", "q3.jpg", photo.clone())],
    ));
    // A sent voice note (the provider writes the self token as From on sent rows).
    let mut sent = rcs(11, 2, "insert-address-token", &[PEER], t + 1, vec![media_part(110, "audio/mp4", "voice.m4a", voice)]);
    sent.ct_t = Some("application/vnd.gsma.rcs-ft-http+xml".into());
    view.mms.push(sent);
    // A shared location: its content is a text part with a maps URL.
    let mut loc = rcs(12, 1, PEER, &[BUSINESS_LINE], t + 2, vec![text_part(120, "https://maps.google.com/?q=51.5,-0.12")]);
    loc.ct_t = Some("application/vnd.gsma.rcspushlocation+xml".into());
    view.mms.push(loc);
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(r.count("message"), 3, "{r:?}");
    assert_eq!(r.count("attachment"), 2, "{r:?}");

    // The peer edits the group message: a new row, same thread, sender and time, other text.
    view.mms.push(rcs(13, 1, PEER, &[BUSINESS_LINE, PEER2], t, vec![text_part(130, "Q3 numbers attached (corrected)")]));
    // A tapback on the location, quoting it exactly.
    view.mms.push(rcs(
        14,
        1,
        PEER2,
        &[BUSINESS_LINE, PEER],
        t + 3,
        vec![text_part(140, "\u{200B}👍\u{200B} to \"https://maps.google.com/?q=51.5,-0.12\"")],
    ));
    // A tapback quoting nothing we hold (truncated): archived as a message with its text.
    view.mms.push(rcs(15, 1, PEER2, &[BUSINESS_LINE, PEER], t + 4, vec![text_part(150, "😂 to \"Quarterly numb…\"")]));
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(
        pairs(&r),
        [("edit", "mms:13".to_string()), ("reaction", "mms:14".to_string()), ("message", "mms:15".to_string())]
    );

    // The user deletes the location and the sent voice note: no tombstone, the rows are gone.
    view.mms.retain(|m| m.id != 12 && m.id != 11);
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("unsend", "mms:11".to_string()), ("unsend", "mms:12".to_string())]);
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert!(r.events.is_empty(), "a deletion is captured once: {r:?}");

    let bodies = archived(&s);
    let group = bodies.iter().find_map(|b| match b {
        RecordBody::Message(m) if m.meta.source_id == "mms:10" => Some(m.clone()),
        _ => None,
    });
    let group = group.unwrap();
    assert_eq!(group.meta.channel, Channel::Rcs);
    assert_eq!(group.sender, PEER);
    assert_eq!(group.recipients, [BUSINESS_LINE, PEER2]);
    assert_eq!(group.meta.source_time_ms, t * 1000, "MMS/RCS seconds become milliseconds");
    assert_eq!(group.attachment_ids, ["mms:10/part:101"]);
    let edit = bodies.iter().find_map(|b| match b {
        RecordBody::Edit(e) => Some(e.clone()),
        _ => None,
    });
    let edit = edit.unwrap();
    assert_eq!((edit.target_message_id.as_str(), edit.editor.as_str()), ("mms:10", PEER));
    assert_eq!(edit.new_text, "Q3 numbers attached (corrected)");
    let reaction = bodies.iter().find_map(|b| match b {
        RecordBody::Reaction(r) => Some(r.clone()),
        _ => None,
    });
    let reaction = reaction.unwrap();
    assert_eq!(
        (reaction.target_message_id.as_str(), reaction.actor.as_str(), reaction.reaction.as_str()),
        ("mms:12", PEER2, "👍")
    );
    let unsent: Vec<_> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Unsend(u) => Some((u.target_message_id.clone(), u.meta.channel)),
            _ => None,
        })
        .collect();
    assert_eq!(unsent, [("mms:11".to_string(), Channel::Rcs), ("mms:12".to_string(), Channel::Rcs)]);
    let sent_voice = bodies.iter().find_map(|b| match b {
        RecordBody::AttachmentStart(a) if a.meta.source_id == "mms:11/part:110" => Some(a.clone()),
        _ => None,
    });
    let sent_voice = sent_voice.unwrap();
    assert_eq!((sent_voice.sender.as_str(), sent_voice.direction), (BUSINESS_LINE, Direction::Outbound));
}

#[tokio::test]
async fn a_real_mms_and_an_rcs_fallback_to_sms_keep_their_channels() {
    let s = Setup::new();
    let agent = configured(&s).await;
    scan(&agent, &ProviderView::default(), &opts()).await.unwrap();
    let t = NOW / 1000 - 30;
    let pic = s.files.path().join("pic.gif");
    std::fs::write(&pic, b"GIF89a").unwrap();
    let mut mms = rcs(
        20,
        1,
        PEER,
        &[BUSINESS_LINE],
        t,
        vec![
            Part {
                id: 200,
                ct: "application/smil".into(),
                text: None,
                name: None,
                file_name: None,
                data: Some("smil".into()),
                file: None,
            },
            text_part(201, "see pic"),
            media_part(202, "image/gif", "pic.gif", pic),
        ],
    );
    mms.ct_cls = None;
    let view = ProviderView { sms: vec![sms(30, 1, "sent as SMS after RCS failed", NOW - 1000)], mms: vec![mms] };
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(r.count("message"), 2);
    assert_eq!(r.count("attachment"), 1, "the SMIL layout part is not an attachment");
    let channels: Vec<_> = archived(&s)
        .iter()
        .filter_map(|b| match b {
            RecordBody::Message(m) => Some((m.meta.source_id.clone(), m.meta.channel)),
            _ => None,
        })
        .collect();
    assert!(
        channels.contains(&("mms:20".into(), Channel::Mms)) && channels.contains(&("sms:30".into(), Channel::Sms)),
        "{channels:?}"
    );
}

#[tokio::test]
async fn a_scan_cut_short_is_finished_by_the_next_one_without_duplicates() {
    let s = Setup::new();
    let agent = configured(&s).await;
    scan(&agent, &ProviderView::default(), &opts()).await.unwrap();
    let photo = s.files.path().join("a.jpg");
    std::fs::write(&photo, vec![1u8; 5000]).unwrap();
    let t = NOW / 1000 - 10;
    let view = ProviderView {
        sms: vec![sms(1, 1, "one", NOW - 30_000)],
        mms: vec![rcs(
            5,
            1,
            PEER,
            &[BUSINESS_LINE],
            t,
            vec![text_part(50, "two"), media_part(51, "image/jpeg", "a.jpg", photo.clone())],
        )],
    };
    // The part's bytes are unreadable this time: the scan stops there, after the SMS.
    let mut broken = view.clone();
    broken.mms[0].parts[1].file = Some(s.files.path().join("missing.jpg"));
    let e = scan(&agent, &broken, &opts()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::File, "{e}");
    // The next wake-up gets the photo in, then fails storing the message itself.
    let db = s.db();
    db.execute_batch(
        "CREATE TRIGGER cut BEFORE INSERT ON source_state WHEN NEW.key = 'mms/000000000005' BEGIN SELECT RAISE(ABORT, 'cut'); END;",
    )
    .unwrap();
    assert_eq!(scan(&agent, &view, &opts()).await.unwrap_err().kind, ErrorKind::Storage);
    db.execute_batch("DROP TRIGGER cut;").unwrap();
    // The one after finishes: neither the SMS nor the photo is captured again, the message is.
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("message", "mms:5".to_string())]);
    let photos = archived(&s).iter().filter(|b| matches!(b, RecordBody::AttachmentStart(_))).count();
    assert_eq!(photos, 1);
    let ids: Vec<String> = archived(&s)
        .iter()
        .filter_map(|b| match b {
            RecordBody::Message(m) => Some(m.meta.source_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["sms:1", "mms:5"]);
}

#[tokio::test]
async fn refused_captures_are_offered_again_and_bad_views_change_nothing() {
    let s = Setup::new();
    let agent = s.open();
    let view = ProviderView { sms: vec![sms(1, 1, "before the policy", NOW - 1000)], mms: vec![] };
    // No policy yet: the baseline is taken (the provider's history), nothing is captured.
    scan(&agent, &ProviderView::default(), &opts()).await.unwrap();
    assert_eq!(scan(&agent, &view, &opts()).await.unwrap_err().kind, ErrorKind::NotConfigured);
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("message", "sms:1".to_string())], "the refused row is captured once a policy is in force");

    // Units the provider never uses, duplicate ids: refused by name, nothing stored.
    let before = agent.status().last_seq;
    for (bad, needle) in [
        (ProviderView { sms: vec![sms(2, 1, "x", NOW / 1000)], mms: vec![] }, "sms _id 2: date must be milliseconds"),
        (
            ProviderView { sms: vec![], mms: vec![rcs(3, 1, PEER, &[], NOW, vec![text_part(1, "x")])] },
            "mms _id 3: date must be seconds",
        ),
        (
            ProviderView { sms: vec![sms(4, 1, "a", NOW - 1), sms(4, 1, "b", NOW - 1)], mms: vec![] },
            "sms _id 4: not a unique provider id",
        ),
    ] {
        let e = scan(&agent, &bad, &opts()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidEvent);
        assert!(e.detail.contains(needle), "{e}");
        assert!(!e.detail.contains("\"x\""), "no content in errors: {e}");
    }
    assert_eq!(agent.status().last_seq, before);
}

#[tokio::test]
async fn an_unchanged_provider_of_many_rows_emits_nothing() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let view = ProviderView { sms: (1..=2000).map(|i| sms(i, 1 + i % 2, "x", NOW - 10_000_000 + i)).collect(), mms: vec![] };
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(r.baseline, 2000);
    let before = agent.status().last_seq;
    for _ in 0..3 {
        let r = scan(&agent, &view, &opts()).await.unwrap();
        assert!(r.events.is_empty() && r.unchanged == 2000);
    }
    assert_eq!(agent.status().last_seq, before);
}

#[tokio::test]
async fn pages_walk_a_large_state_in_order_and_find_deletions_anywhere() {
    use verbatim_core::sources::telephony::Scanner;
    let s = Setup::new();
    let agent = configured(&s).await;
    let mut rows: Vec<SmsRow> = (1..=3000).map(|i| sms(i, 1, "history", NOW - 10_000_000 + i)).collect();
    let feed = |rows: Vec<SmsRow>| {
        let agent = &agent;
        async move {
            let mut scanner = Scanner::begin(agent, opts()).await.unwrap();
            for page in rows.chunks(700) {
                scanner.sms(page).await.unwrap();
            }
            scanner.finish().await.unwrap()
        }
    };
    assert_eq!(feed(rows.clone()).await.baseline, 3000);
    // New rows among the history's ids' successors, then deletions in every state page.
    rows.extend((3001..=3003).map(|i| sms(i, 1, "new", NOW - 1000 + i)));
    assert_eq!(feed(rows.clone()).await.count("message"), 3);
    rows.retain(|r| ![5, 1500, 2999, 3002].contains(&r.id));
    let r = feed(rows.clone()).await;
    assert_eq!(pairs(&r), [("unsend", "sms:3002".to_string())], "history deleted is forgotten, a captured row is evidenced");
    assert_eq!(r.unchanged, 2999);
    let r = feed(rows.clone()).await;
    assert!(r.events.is_empty() && r.unchanged == 2999, "{r:?}");

    // Pages out of order are refused by row, before that row is looked at.
    let mut scanner = Scanner::begin(&agent, opts()).await.unwrap();
    scanner.sms(&rows[10..12]).await.unwrap();
    let e = scanner.sms(&rows[5..6]).await.unwrap_err();
    assert!(e.detail.contains("ascending _id"), "{e}");
}

#[tokio::test]
async fn the_platform_scan_takes_its_line_history_and_time_from_the_policy_and_clock() {
    let s = Setup::new();
    let agent = s.open();
    let e = ScanOptions::from_policy(&agent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotConfigured, "no policy: the scan fails closed");
    agent.apply_policy(&s.policy(&[("backfill_days", 3.into()), ("organization_name", "Acme Securities".into())])).await.unwrap();
    let o = ScanOptions::from_policy(&agent).unwrap();
    assert_eq!((o.line.clone(), o.backfill_days), (verbatim_core::model::normalize_handle(BUSINESS_LINE), 3));
    assert!((o.now_ms - agent.clock().now_ms()).abs() < 60_000, "the agent's clock");
    assert_eq!(agent.status().organization_name.as_deref(), Some("Acme Securities"), "for the platform's notice");
    assert!(agent.withdraw_policy().await.unwrap());
    let e = ScanOptions::from_policy(&agent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotConfigured, "withdrawn: the scan fails closed");
    assert_eq!(agent.status().organization_name, None);
}

#[tokio::test]
async fn only_rows_not_seen_before_need_their_media_streamed() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let view =
        ProviderView { sms: vec![], mms: vec![rcs(5, 1, PEER, &[BUSINESS_LINE], NOW / 1000 - 60, vec![text_part(50, "seen")])] };
    scan(&agent, &view, &opts()).await.unwrap();
    let scanner = verbatim_core::sources::telephony::Scanner::begin(&agent, opts()).await.unwrap();
    assert_eq!(scanner.unseen_mms(&[5, 6, 7]).unwrap(), [6, 7], "row 5 is remembered (as history): its media is not needed");
}

#[tokio::test]
async fn the_rest_of_the_event_matrix_long_sms_mms_out_video_vcard_sent_edit_and_mms_deletion() {
    let s = Setup::new();
    let agent = configured(&s).await;
    scan(&agent, &ProviderView::default(), &opts()).await.unwrap();
    let t = NOW / 1000 - 120;
    let file = |name: &str, bytes: usize| {
        let p = s.files.path().join(name);
        std::fs::write(&p, vec![3u8; bytes]).unwrap();
        p
    };
    let long_text = "A long SMS arrives as one reassembled row. ".repeat(12);
    // A sent real MMS (no ct_cls) with a video and a contact card; the self token as From.
    let mut mms_out = rcs(
        40,
        2,
        "insert-address-token",
        &[PEER],
        t,
        vec![
            text_part(400, "clip and contact"),
            media_part(401, "video/mp4", "clip.mp4", file("clip.mp4", 40_000)),
            media_part(402, "text/x-vcard", "jane.vcf", file("jane.vcf", 300)),
        ],
    );
    mms_out.ct_cls = None;
    // A sent RCS message, then its edit by the phone's user (same thread, sender, time).
    let sent = rcs(41, 2, "insert-address-token", &[PEER], t + 5, vec![text_part(410, "See you at 3")]);
    let sent_edit = rcs(42, 2, "insert-address-token", &[PEER], t + 5, vec![text_part(420, "See you at 4")]);
    let mut view = ProviderView { sms: vec![sms(50, 1, &long_text, NOW - 60_000)], mms: vec![mms_out, sent] };
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(r.count("message"), 3, "{r:?}");
    assert_eq!(r.count("attachment"), 2, "video and vCard: {r:?}");
    view.mms.push(sent_edit);
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("edit", "mms:42".to_string())], "an edit sent from the phone");

    // The user deletes the MMS.
    view.mms.retain(|m| m.id != 40);
    let r = scan(&agent, &view, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("unsend", "mms:40".to_string())]);

    let bodies = archived(&s);
    let long = bodies.iter().find_map(|b| match b {
        RecordBody::Message(m) if m.meta.source_id == "sms:50" => Some(m.text.clone()),
        _ => None,
    });
    assert_eq!(long.as_deref(), Some(long_text.as_str()), "one message, the whole text");
    let out = bodies.iter().find_map(|b| match b {
        RecordBody::Message(m) if m.meta.source_id == "mms:40" => Some(m.clone()),
        _ => None,
    });
    let out = out.unwrap();
    assert_eq!((out.meta.channel, out.direction, out.sender.as_str()), (Channel::Mms, Direction::Outbound, BUSINESS_LINE));
    assert_eq!(out.recipients, [PEER]);
    let kinds: Vec<_> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::AttachmentStart(a) => Some(a.mime_type.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["video/mp4", "text/x-vcard"]);
    let edit = bodies.iter().find_map(|b| match b {
        RecordBody::Edit(e) => Some(e.clone()),
        _ => None,
    });
    let edit = edit.unwrap();
    assert_eq!(
        (edit.target_message_id.as_str(), edit.editor.as_str(), edit.new_text.as_str()),
        ("mms:41", BUSINESS_LINE, "See you at 4")
    );
}

#[tokio::test]
async fn whole_buckets_deleted_and_the_seen_bitmaps_agree_with_the_rows_remembered() {
    let s = Setup::new();
    let agent = configured(&s).await;
    let mut rows: Vec<SmsRow> = (1..=5000).map(|i| sms(i, 1, "history", NOW - 10_000_000 + i)).collect();
    scan(&agent, &ProviderView { sms: rows.clone(), mms: vec![] }, &opts()).await.unwrap();
    rows.extend((5001..=5010).map(|i| sms(i, 2, "new", NOW - 5_000 + i)));
    assert_eq!(scan(&agent, &ProviderView { sms: rows.clone(), mms: vec![] }, &opts()).await.unwrap().count("message"), 10);
    // The user clears the whole range 1,024..3,000 (two whole bitmaps and parts of two more),
    // and one of the new rows.
    rows.retain(|r| !(1024..=3000).contains(&r.id) && r.id != 5005);
    let r = scan(&agent, &ProviderView { sms: rows.clone(), mms: vec![] }, &opts()).await.unwrap();
    assert_eq!(pairs(&r), [("unsend", "sms:5005".to_string())]);
    assert_eq!(r.unchanged as usize, rows.len());

    // Every remembered row has its bit, and every bit its row.
    let state = agent.source_state("telephony").unwrap();
    let rows_remembered: std::collections::BTreeSet<i64> =
        state.keys().filter_map(|k| k.strip_prefix("sms/")).map(|id| id.parse().unwrap()).collect();
    let mut bits = std::collections::BTreeSet::new();
    for (k, v) in &state {
        if let Some(bucket) = k.strip_prefix("seen/sms/") {
            let bucket: i64 = bucket.parse().unwrap();
            for i in 0..1024i64 {
                if v[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                    bits.insert(bucket * 1024 + i);
                }
            }
        }
    }
    assert_eq!(bits, rows_remembered);
    assert_eq!(rows_remembered.len(), rows.len());
}

#[tokio::test]
async fn a_row_the_agent_refuses_is_evidenced_once_and_the_scans_go_on() {
    use verbatim_core::record::AgentEvent;
    use verbatim_core::sources::telephony::Scanner;
    let s = Setup::new();
    let agent = configured(&s).await;
    scan(&agent, &ProviderView::default(), &opts()).await.unwrap();
    // A platform page with a row whose date is in seconds, and a received MMS without its
    // sender: neither can be captured; the rows after them must be.
    let bad_date = sms(2, 1, "x", NOW / 1000);
    let mut no_sender = rcs(7, 1, PEER, &[BUSINESS_LINE], NOW / 1000 - 5, vec![text_part(70, "y")]);
    no_sender.addr.retain(|a| a.kind != 137);
    let good = [sms(3, 1, "after", NOW - 1000), sms(4, 2, "after too", NOW - 900)];
    for _ in 0..2 {
        let mut scanner = Scanner::begin(&agent, opts()).await.unwrap();
        scanner.sms([&bad_date, &good[0], &good[1]]).await.unwrap();
        scanner.mms([&no_sender]).await.unwrap();
        scanner.finish().await.unwrap();
    }
    let messages: Vec<String> = archived(&s)
        .iter()
        .filter_map(|b| match b {
            RecordBody::Message(m) => Some(m.meta.source_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, ["sms:3", "sms:4"]);
    let refused: Vec<(String, String)> = open_all(&s)
        .into_iter()
        .filter_map(|(_, r)| match r.body {
            RecordBody::Agent(AgentEvent::UncapturedCommunication { source_id, reason, .. }) => Some((source_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "each refused row evidenced once, not at every scan: {refused:?}");
    assert!(refused[0].0 == "sms:2" && refused[0].1.contains("date must be milliseconds"), "{refused:?}");
    assert!(refused[1].0 == "mms:7" && refused[1].1.contains("without its sender"), "{refused:?}");
    assert!(refused.iter().all(|(_, reason)| !reason.contains("\"y\"")), "no content in the evidence");
}
