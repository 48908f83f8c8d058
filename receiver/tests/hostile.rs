//! Hostile clients against a real receiver on 127.0.0.1, over TLS, byte by byte where it
//! matters: oversized and mis-framed bodies, bodies cut short, slow clients, epochs that do not
//! match, sequence numbers near u64::MAX, replays, another tenant's records, garbage
//! credentials, huge headers. After each: no 5xx, nothing stored that should not be, and the
//! receiver still serves an honest device.
//!
//! Timeouts are shortened in each receiver's `Limits` so the slow-client tests take seconds.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use verbatim_core::chain;
use verbatim_core::secret::Secret;
use verbatim_core::wire::{Batch, CONTENT_TYPE, Cursor, EpochInfo, WireRecord};
use verbatim_receiver::{ReceiverConfig, RunningReceiver, add_device, verify};

const SHORT: Duration = Duration::from_secs(2);

/// A receiver with short timeouts and a 64 KiB body limit.
fn hostile_config(dir: &std::path::Path) -> ReceiverConfig {
    let mut cfg = config(dir);
    cfg.limits.max_body_bytes = 64 * 1024;
    cfg.limits.header_timeout = SHORT;
    cfg.limits.body_timeout = SHORT;
    cfg.limits.shutdown_grace = Duration::from_millis(200);
    cfg
}

struct Setup {
    dir: tempfile::TempDir,
    rx: RunningReceiver,
    token: Secret,
    client: reqwest::Client,
    tls: TlsConnector,
}

async fn setup(tune: impl FnOnce(&mut ReceiverConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = hostile_config(dir.path());
    tune(&mut cfg);
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir.path()), "acme", "dev-1").unwrap();
    let ca = rx.ca_pem().unwrap().to_string();
    let tls = TlsConnector::from(Arc::new(verbatim_receiver::tls::client_config(&ca).unwrap()));
    Setup { dir, client: client(&ca), rx, token, tls }
}

impl Setup {
    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.rx.addr()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        self.tls.connect(name, tcp).await.unwrap()
    }

    fn head(&self, content_length: Option<usize>, extra: &str) -> String {
        let mut h = format!(
            "POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: {CONTENT_TYPE}\r\n{extra}",
            self.token.expose()
        );
        if let Some(n) = content_length {
            h.push_str(&format!("Content-Length: {n}\r\n"));
        }
        h.push_str("\r\n");
        h
    }

    async fn records_held(&self) -> u64 {
        verify(self.dir.path()).unwrap().totals.records
    }

    /// An honest device can still upload (the receiver survived).
    async fn still_serves(&self, stream: &str) {
        let mut dev = Device::new(&archive_keys(), "acme", "dev-1", stream);
        dev.push_n(2);
        let ack = post(&self.client, &self.rx.url(), self.token.expose(), &dev.batch(1, 2)).await.ack();
        assert_eq!(ack.acked_through, 2);
    }

    async fn cursor_of(&self, stream: &str) -> u64 {
        let c: Cursor =
            serde_json::from_str(&cursor(&self.client, &self.rx.url(), self.token.expose(), stream).await.body).unwrap();
        c.acked_through
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
enum Answer {
    Response {
        status: u16,
        headers: String,
        body: String,
    },
    /// The server closed the connection without a response.
    Closed,
    /// Nothing within the wait.
    Silent,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed, as the receiver answers), or notices
/// that the connection closed or stayed silent for `wait`.
async fn read_answer(s: &mut TlsStream<TcpStream>, wait: Duration) -> Answer {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..(end + 4 + len).min(buf.len())]).to_string();
            return Answer::Response { status, headers: head, body };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Silent;
        }
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if buf.is_empty() {
                    Answer::Closed
                } else {
                    Answer::Response { status: 0, headers: String::from_utf8_lossy(&buf).into(), body: String::new() }
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Answer::Silent,
        }
    }
}

fn honest_batch(stream: &str, n: usize) -> (Device, Batch) {
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", stream);
    dev.push_n(n);
    let b = dev.batch(1, n as u64);
    (dev, b)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_whatever_the_framing_and_store_nothing() {
    let s = setup(|_| {}).await;

    // Declared too large: refused on the header, before the body (which never comes in full).
    let mut c = s.connect().await;
    c.write_all(s.head(Some(10 * 1024 * 1024), "").as_bytes()).await.unwrap();
    c.write_all(&[0u8; 1024]).await.unwrap();
    let started = Instant::now();
    let a = read_answer(&mut c, Duration::from_secs(8)).await;
    assert_eq!(a.status(), Some(413), "{a:?}");
    assert!(started.elapsed() < SHORT + Duration::from_secs(3), "answered within the body timeout");

    // Chunked, no length: refused once more than the limit has arrived.
    let mut c = s.connect().await;
    c.write_all(s.head(None, "Transfer-Encoding: chunked\r\n").as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut answer = None;
    for _ in 0..12 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if c.write_all(&frame).await.is_err() {
            break;
        }
        if let Ok(a) = tokio::time::timeout(Duration::from_millis(50), read_answer(&mut c, Duration::from_millis(50))).await
            && !matches!(a, Answer::Silent)
        {
            answer = Some(a);
            break;
        }
    }
    let a = match answer {
        Some(a) => a,
        None => read_answer(&mut c, Duration::from_secs(5)).await,
    };
    // The documented answer is 413; a server that stops reading may also reset the
    // connection before the client reads it. Either way, never a 5xx or a success.
    match &a {
        Answer::Response { status, body, .. } => {
            assert_eq!(*status, 413, "{body}");
            assert!(body.contains("too_large"), "{body}");
        }
        Answer::Closed => eprintln!("chunked oversize: connection closed before the 413 was read"),
        Answer::Silent => panic!("no answer to an oversized chunked body"),
    }

    // Through reqwest, as a device would send it.
    let r = post_raw(&s.client, &s.rx.url(), Some(s.token.expose()), CONTENT_TYPE, vec![0u8; 200 * 1024]).await.unwrap();
    assert_eq!((r.status, r.error().error.as_str()), (413, "too_large"));

    assert_eq!(s.records_held().await, 0);
    s.still_serves("after-oversize").await;
    s.rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_stores_nothing() {
    let s = setup(|_| {}).await;
    let (_, batch) = honest_batch("cut", 6);
    let body = batch.encode();

    // Half the body, then the connection is closed: no answer needed, nothing stored.
    let mut c = s.connect().await;
    c.write_all(s.head(Some(body.len()), "").as_bytes()).await.unwrap();
    c.write_all(&body[..body.len() / 2]).await.unwrap();
    c.flush().await.unwrap();
    let _ = c.shutdown().await;
    drop(c);

    // Every possible cut point of the same body, in one connection each, closed at once.
    for cut in [1, 4, 10, body.len() - 1] {
        let mut c = s.connect().await;
        c.write_all(s.head(Some(body.len()), "").as_bytes()).await.unwrap();
        c.write_all(&body[..cut]).await.unwrap();
        let _ = c.shutdown().await;
    }

    // Half the body, then silence: the body timeout answers 408 with Retry-After.
    let mut c = s.connect().await;
    c.write_all(s.head(Some(body.len()), "").as_bytes()).await.unwrap();
    c.write_all(&body[..body.len() / 2]).await.unwrap();
    let a = read_answer(&mut c, SHORT + Duration::from_secs(4)).await;
    match &a {
        Answer::Response { status, headers, body } => {
            assert_eq!(*status, 408, "{body}");
            assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");
        }
        other => panic!("a stalled body gets 408, got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.records_held().await, 0, "a cut body stores nothing");
    assert_eq!(s.cursor_of("cut").await, 0);
    // The whole body later is stored normally.
    assert_eq!(post(&s.client, &s.rx.url(), s.token.expose(), &batch).await.ack().acked_through, 6);
    s.rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_timeouts_and_hold_no_slot_for_long() {
    // One request slot: a slow client holds it, everyone else gets 503 + Retry-After until the
    // timeout frees it.
    let s = setup(|c| c.limits.max_concurrent_requests = 1).await;

    // Headers one byte per second: the header timeout closes the connection.
    let mut c = s.connect().await;
    let head = s.head(Some(10), "");
    let started = Instant::now();
    let mut sent = 0;
    let mut outcome = Answer::Silent;
    for byte in head.as_bytes() {
        if c.write_all(&[*byte]).await.is_err() || c.flush().await.is_err() {
            outcome = Answer::Closed;
            break;
        }
        sent += 1;
        let a = read_answer(&mut c, Duration::from_secs(1)).await;
        if !matches!(a, Answer::Silent) {
            outcome = a;
            break;
        }
        assert!(started.elapsed() < SHORT + Duration::from_secs(5), "still connected after {sent} bytes");
    }
    eprintln!("slow headers: {outcome:?} after {sent} bytes, {:.1} s", started.elapsed().as_secs_f64());
    assert!(sent < head.len(), "the whole header went through at one byte per second");
    assert!(matches!(outcome, Answer::Closed) || outcome.status().is_some_and(|s| s == 408 || s == 400), "{outcome:?}");
    assert!(started.elapsed() < SHORT + Duration::from_secs(3), "cut off after {:?}", started.elapsed());

    // Headers at once, then the body one byte per second: 408 after the body timeout.
    let (_, batch) = honest_batch("slow", 3);
    let body = batch.encode();
    let mut c = s.connect().await;
    c.write_all(s.head(Some(body.len()), "").as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Answer::Silent;
    let mut probed = false;
    for byte in &body {
        if c.write_all(&[*byte]).await.is_err() {
            break;
        }
        let _ = c.flush().await;
        if !probed && started.elapsed() > Duration::from_millis(500) {
            // Meanwhile the only slot is taken: another device is told to come back.
            probed = true;
            let r = post(&s.client, &s.rx.url(), s.token.expose(), &honest_batch("other", 1).1).await;
            assert_eq!((r.status, r.retry_after.as_deref()), (503, Some("1")), "{}", r.body);
        }
        answer = read_answer(&mut c, Duration::from_secs(1)).await;
        if !matches!(answer, Answer::Silent) {
            break;
        }
        assert!(started.elapsed() < SHORT + Duration::from_secs(5), "a slow body was never cut off");
    }
    assert_eq!(answer.status(), Some(408), "{answer:?}");
    let took = started.elapsed();
    assert!(took >= SHORT - Duration::from_millis(100) && took < SHORT + Duration::from_secs(3), "408 after {took:?}");
    assert!(probed);

    // The slot is free again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.records_held().await, 0);
    s.still_serves("after-slow").await;
    s.rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_that_do_not_match_are_refused_and_recorded() {
    let s = setup(|_| {}).await;
    let url = s.rx.url();
    let t = s.token.expose();
    let (dev, batch) = honest_batch("epochs", 4);

    // A record whose epoch is not announced.
    let mut b = batch.clone();
    b.records[2].epoch = 9;
    let r = post(&s.client, &url, t, &b).await;
    assert_eq!((r.status, r.error().error.as_str()), (400, "malformed"));
    assert!(r.error().reason.contains("not announced"), "{}", r.body);

    // No epoch announced at all.
    let mut b = batch.clone();
    b.epochs.clear();
    assert_eq!(post(&s.client, &url, t, &b).await.status, 400);

    // One epoch announced twice, or with an encapsulation of the wrong size.
    let mut b = batch.clone();
    b.epochs.push(b.epochs[0].clone());
    assert!(post(&s.client, &url, t, &b).await.error().reason.contains("announced twice"));
    for len in [0usize, 31, 33, 1000] {
        let mut b = batch.clone();
        b.epochs[0].encapsulation = vec![7; len];
        assert_eq!(post(&s.client, &url, t, &b).await.status, 400, "encapsulation of {len} bytes");
    }
    assert_eq!(s.records_held().await, 0);

    // Stored with its epoch; then the same epoch re-announced with another encapsulation.
    assert_eq!(post(&s.client, &url, t, &dev.batch(1, 2)).await.ack().acked_through, 2);
    let mut b = dev.batch(3, 4);
    b.epochs = vec![EpochInfo { encapsulation: vec![0xee; 32], ..dev.epoch.clone() }];
    let r = post(&s.client, &url, t, &b).await;
    assert_eq!((r.status, r.error().error.as_str(), r.error().expected_seq), (409, "conflict", Some(3)));
    // Even a replay of held records under a different encapsulation is refused.
    let mut b = dev.batch(1, 2);
    b.epochs[0].archive_key_id = "another-key".into();
    assert_eq!(post(&s.client, &url, t, &b).await.error().error, "conflict");
    assert_eq!(s.cursor_of("epochs").await, 2);
    assert_eq!(post(&s.client, &url, t, &dev.batch(3, 4)).await.ack().acked_through, 4);
    s.rx.shutdown().await;

    let report = verify(s.dir.path()).unwrap();
    let st = &report.streams[0];
    assert!(st.chain_verified && st.gaps.is_empty() && st.records_without_epoch == 0);
    assert!(st.alerts.iter().all(|a| a.kind == "epoch_conflict") && !st.alerts.is_empty(), "{:?}", st.alerts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_near_the_maximum_are_gaps_or_malformed_never_stored() {
    let s = setup(|_| {}).await;
    let url = s.rx.url();
    let t = s.token.expose();
    let (dev, _) = honest_batch("high", 3);

    // Renumbered, chained correctly from the genesis link, starting far ahead.
    let renumbered = |start: u64, n: usize| -> Batch {
        let mut b = dev.batch(1, n as u64);
        let mut prev = chain::genesis(&b.stream);
        for (i, r) in b.records.iter_mut().enumerate() {
            r.seq = start + i as u64;
            r.link = chain::link(&prev, r.seq, r.epoch, &r.ciphertext);
            prev = r.link;
        }
        b
    };
    for start in [u64::MAX, u64::MAX - 1, 1u64 << 63, (1u64 << 63) - 1, i64::MAX as u64 + 2] {
        let n = if start == u64::MAX { 1 } else { 2 };
        let r = post(&s.client, &url, t, &renumbered(start, n)).await;
        assert_eq!((r.status, r.error().error.as_str(), r.error().expected_seq), (409, "gap", Some(1)), "start {start}");
    }
    // Wrapping past u64::MAX, or a sequence 0, is malformed.
    let mut b = renumbered(u64::MAX, 1);
    b.records.push(WireRecord { seq: 0, ..b.records[0].clone() });
    assert_eq!(post(&s.client, &url, t, &b).await.status, 400);
    let mut b = dev.batch(1, 1);
    b.records[0].seq = 0;
    assert_eq!(post(&s.client, &url, t, &b).await.status, 400);

    // With 1..3 held, far-ahead batches are still gaps expecting 4, and nothing moves.
    assert_eq!(post(&s.client, &url, t, &dev.batch(1, 3)).await.ack().acked_through, 3);
    for start in [u64::MAX, 1u64 << 63, 5] {
        let r = post(&s.client, &url, t, &renumbered(start, 1)).await;
        assert_eq!((r.status, r.error().expected_seq), (409, Some(4)), "start {start}: {}", r.body);
    }
    assert_eq!(s.cursor_of("high").await, 3);
    s.rx.shutdown().await;

    let report = verify(s.dir.path()).unwrap();
    let st = &report.streams[0];
    assert_eq!((st.records, st.contiguous_through, st.last_seq), (3, 3, Some(3)));
    assert!(st.chain_verified && st.gaps.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_batches_change_nothing() {
    let s = setup(|_| {}).await;
    let url = s.rx.url();
    let t = s.token.expose();
    let (dev, batch) = honest_batch("replay", 5);
    assert_eq!(post(&s.client, &url, t, &batch).await.ack().stored, 5);
    for _ in 0..3 {
        let ack = post(&s.client, &url, t, &batch).await.ack();
        assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (5, 0, 5));
    }
    for (a, b) in [(2, 4), (5, 5), (1, 1)] {
        let ack = post(&s.client, &url, t, &dev.batch(a, b)).await.ack();
        assert_eq!((ack.acked_through, ack.stored, ack.duplicates), (5, 0, b - a + 1));
    }
    // The very same request bytes on a fresh connection.
    let body = batch.encode();
    let mut c = s.connect().await;
    c.write_all(s.head(Some(body.len()), "Connection: close\r\n").as_bytes()).await.unwrap();
    c.write_all(&body).await.unwrap();
    let a = read_answer(&mut c, Duration::from_secs(5)).await;
    assert_eq!(a.status(), Some(200), "{a:?}");
    s.rx.shutdown().await;

    let report = verify(s.dir.path()).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!(report.totals.records, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_or_devices_records_are_forbidden_and_leave_no_trace() {
    let s = setup(|_| {}).await;
    let url = s.rx.url();
    let globex = add_device(&tokens_path(s.dir.path()), "globex", "dev-1").unwrap();

    // globex/dev-1 holds a stream named "shared".
    let mut theirs = Device::new(&archive_keys(), "globex", "dev-1", "shared");
    theirs.push_n(3);
    assert_eq!(post(&s.client, &url, globex.expose(), &theirs.batch(1, 2)).await.ack().acked_through, 2);

    // acme/dev-1's token: their records, a conflicting rewrite of them, a continuation, and
    // batches naming acme/dev-2 or GLOBEX: all 403, none stored, no alert on their stream.
    let mut rewrite = theirs.batch(1, 2);
    rewrite.records[0].ciphertext[0] ^= 1;
    let mut other_device = Device::new(&archive_keys(), "acme", "dev-2", "s");
    other_device.push_n(1);
    let mut case = Device::new(&archive_keys(), "GLOBEX", "dev-1", "shared");
    case.push_n(1);
    for b in [theirs.batch(1, 2), rewrite, theirs.batch(3, 3), other_device.batch(1, 1), case.batch(1, 1)] {
        let r = post(&s.client, &url, s.token.expose(), &b).await;
        assert_eq!((r.status, r.error().error.as_str()), (403, "forbidden"), "{}", r.body);
    }
    // The cursor answers for the token's own identity only, whatever the stream name.
    let c: Cursor = serde_json::from_str(&cursor(&s.client, &url, s.token.expose(), "shared").await.body).unwrap();
    assert_eq!((c.tenant.as_str(), c.device.as_str(), c.acked_through), ("acme", "dev-1", 0));
    s.rx.shutdown().await;

    let report = verify(s.dir.path()).unwrap();
    assert!(report.ok(), "{}", report.to_text());
    assert_eq!((report.totals.streams, report.totals.records), (1, 2));
    assert!(report.streams[0].alerts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_authorization_headers_all_get_the_same_401() {
    let s = setup(|_| {}).await;
    let (_, batch) = honest_batch("auth", 1);
    let body = batch.encode();
    let real = s.token.expose().to_string();
    let (_, id, secret) = {
        let mut p = real.splitn(3, '.');
        (p.next().unwrap().to_string(), p.next().unwrap().to_string(), p.next().unwrap().to_string())
    };
    let long = "A".repeat(10_000);
    let mut headers: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"Authorization: Bearer\r\n".to_vec(),
        b"Authorization: Bearer \r\n".to_vec(),
        b"Authorization: Bearer    \r\n".to_vec(),
        b"Authorization: Basic YWNtZTpzZWNyZXQ=\r\n".to_vec(),
        format!("Authorization: Bearer {long}\r\n").into_bytes(),
        format!("Authorization: Bearer {real}x\r\n").into_bytes(),
        format!("Authorization: Bearer {real}.extra\r\n").into_bytes(),
        format!("Authorization: Bearer VBT1.{id}.{secret}\r\n").into_bytes(),
        format!("Authorization: Bearer vbt1.{}.{secret}\r\n", id.to_uppercase()).into_bytes(),
        format!("Authorization: Bearer vbt1.{id}.{}\r\n", &secret[..secret.len() - 1]).into_bytes(),
        format!("Authorization: Bearer vbt1.{id}\r\n").into_bytes(),
        format!("Authorization: Bearer vbt1..{secret}\r\n").into_bytes(),
        format!("Authorization: {real}\r\n").into_bytes(),
        format!("Authorization: Bearer\t{real}\r\n").into_bytes(),
        format!("Authorization: Bearer {}\r\n", real.replace('.', " ")).into_bytes(),
        format!("Authorization: Bearer vbt1.{id}.{secret}%00\r\n").into_bytes(),
    ];
    // Two Authorization headers, the first one garbage: the garbage one counts.
    headers.push(format!("Authorization: Bearer garbage\r\nAuthorization: Bearer {real}\r\n").into_bytes());
    // Bytes that are not UTF-8 or visible ASCII.
    let mut raw = b"Authorization: Bearer vbt1.".to_vec();
    raw.extend_from_slice(&[0xff, 0xfe, 0x80]);
    raw.extend_from_slice(b"\r\n");
    headers.push(raw);

    let mut bodies = Vec::new();
    for h in &headers {
        let mut c = s.connect().await;
        let mut req = b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
        req.extend_from_slice(format!("Content-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n", body.len()).as_bytes());
        req.extend_from_slice(h);
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&body);
        c.write_all(&req).await.unwrap();
        let a = read_answer(&mut c, Duration::from_secs(10)).await;
        let shown = String::from_utf8_lossy(h).to_string();
        match a {
            Answer::Response { status, headers, body } => {
                // hyper itself refuses a header value it cannot carry (400); everything else is
                // the receiver's one 401.
                if status == 400 {
                    assert!(h.iter().any(|b| *b >= 0x80), "400 for {shown}");
                    continue;
                }
                assert_eq!(status, 401, "{shown}: {body}");
                assert!(headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{headers}");
                assert!(!body.contains(&secret) && !body.contains(&id), "the answer echoes the token");
                bodies.push(body);
            }
            other => panic!("{shown}: {other:?}"),
        }
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer for every bad credential: {bodies:?}");
    assert!(bodies.len() >= headers.len() - 1);
    assert_eq!(s.records_held().await, 0);
    s.still_serves("after-auth").await;
    s.rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_and_urls_are_refused_without_harm() {
    let s = setup(|_| {}).await;
    let (_, batch) = honest_batch("huge", 1);
    let body = batch.encode();
    for (what, extra) in [
        ("a 64 KiB header", format!("X-Filler: {}\r\n", "a".repeat(64 * 1024))),
        ("a 1 MiB header", format!("X-Filler: {}\r\n", "a".repeat(1024 * 1024))),
        ("2000 headers", (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        ("a 1 MiB cookie", format!("Cookie: c={}\r\n", "b".repeat(1024 * 1024))),
    ] {
        let mut c = s.connect().await;
        let mut req = s.head(Some(body.len()), &extra).into_bytes();
        req.extend_from_slice(&body);
        let write = c.write_all(&req).await;
        let a = read_answer(&mut c, Duration::from_secs(8)).await;
        match &a {
            Answer::Response { status, .. } => {
                assert!(*status == 431 || *status == 400 || *status == 413 || *status == 200, "{what}: {a:?}")
            }
            Answer::Closed => {}
            Answer::Silent => panic!("{what}: no answer and the connection stays open"),
        }
        eprintln!("{what}: write {:?}, answer {:?}", write.is_ok(), a.status());
    }
    // A huge path on the cursor.
    let mut c = s.connect().await;
    let req = format!(
        "GET /v1/streams/{}/cursor HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        "s".repeat(512 * 1024),
        s.token.expose()
    );
    let _ = c.write_all(req.as_bytes()).await;
    let a = read_answer(&mut c, Duration::from_secs(8)).await;
    assert!(matches!(a, Answer::Closed) || a.status().is_some_and(|st| (400..500).contains(&st)), "{a:?}");
    // A stream id just over the limit is malformed.
    let r = cursor(&s.client, &s.rx.url(), s.token.expose(), &"s".repeat(257)).await;
    assert_eq!(r.status, 400);

    s.still_serves("after-huge").await;
    s.rx.shutdown().await;
    let report = verify(s.dir.path()).unwrap();
    assert!(report.ok());
}
