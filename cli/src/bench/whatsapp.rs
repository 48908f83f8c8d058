//! `verbatim bench`: 10: the WhatsApp coexistence connector's webhook ingest.
//!
//! A burst of N signed webhooks (one 1 KiB text message each, as Meta sends them one message
//! per POST) from 64 concurrent connections on loopback to the connector's own endpoint
//! (`connect_cmd::router`: signature check, parse, wamid lookup, durable capture, then 200).
//! Each POST is timed from its first byte sent to its answer read: the acknowledgement latency
//! Meta sees. Baselines, in the same run and process: the same N messages captured straight into
//! an agent by 64 concurrent tasks (sealed, chained, durable; no HTTP, no signature, no marks),
//! and the same burst over the same HTTP stack to an endpoint that only checks the signature
//! (what the transport alone costs on this machine).

#[allow(unused_imports)]
use super::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::AtomicUsize;

use verbatim_core::secret::Secret;
use verbatim_core::sources::connector::Lines;
use verbatim_core::sources::whatsapp::{self, Webhook, sign};

use crate::connect_cmd::{App, router};

/// Concurrent connections of the burst (and tasks of the baseline).
const CONNECTIONS: usize = 64;
const SECRET: &str = "bench-app-secret";

pub(super) fn bench_whatsapp(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "whatsapp")?;
    let rt = runtime()?;
    let n = plan.whatsapp_messages;
    let text = message_text();

    let direct = capture_agent(&rt, &dir.join("direct"))?;
    let direct_secs = rt.block_on(fill(&direct, n, CONNECTIONS, &text, "direct"))?;
    rt.block_on(direct.close()).map_err(|e| format!("close: {e}"))?;

    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let tree = policy(NO_ARCHIVE, &public, "bench-token-never-sent", "bench-wa", 1024, None);
    let lines = Lines::new(whatsapp::SOURCE, &dir.join("connector"), tree, BTreeMap::new()).map_err(|e| format!("lines: {e}"))?;
    let lines = Arc::new(lines);
    let app = App::new(Webhook::new(lines.clone(), Secret::new(SECRET), Secret::new("bench-verify"), None), false);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| format!("listen on 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("{e}"))?.to_string();
    let server = rt.spawn(async move { axum::serve(listener, router(app)).await });

    // Baseline 2: the same burst over the same HTTP stack to an endpoint that checks the
    // signature and answers 200 without capturing: what the transport alone costs.
    let plain = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| format!("listen on 127.0.0.1: {e}"))?;
    let plain_addr = plain.local_addr().map_err(|e| format!("{e}"))?.to_string();
    let transport = axum::Router::new().route(
        "/webhook",
        axum::routing::post(|headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
            if whatsapp::signature_valid(SECRET.as_bytes(), &body, signature) {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::UNAUTHORIZED
            }
        }),
    );
    let transport_server = rt.spawn(async move { axum::serve(plain, transport).await });
    let (transport_secs, _) = burst(&plain_addr, n, &text)?;
    transport_server.abort();

    let (webhook_secs, mut latencies) = burst(&addr, n, &text)?;
    server.abort();
    let captured = lines.opened().first().map(|(_, a)| a.snapshot().pending_count).unwrap_or(0);
    rt.block_on(lines.close());
    remove(&dir);
    // Every message durable once (plus the agent's own start and policy events).
    if captured < n {
        return Err(format!("{captured} records queued for {n} acknowledged messages"));
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile_ms(&latencies, 50.0), percentile_ms(&latencies, 99.0));
    let rate = n as f64 / webhook_secs;
    let ratio = webhook_secs / direct_secs;
    report.rows.push(
        Row::new(
            format!("whatsapp webhook burst, {n} messages, {CONNECTIONS} connections"),
            format!("{rate:.0} msg/s; ack p50 {p50:.1} ms, p99 {p99:.1} ms"),
        )
        .baseline(format!(
            "direct capture {:.0} msg/s: {ratio:.2}x the time; the same HTTP burst, signature checked, nothing captured: {:.0} msg/s ({:.2}x)",
            n as f64 / direct_secs,
            n as f64 / transport_secs,
            webhook_secs / transport_secs
        ))
        .goal("p99 ack < 1 s", p99 < 1000.0),
    );
    report.json.insert(
        "whatsapp".into(),
        json!({ "messages": n, "connections": CONNECTIONS, "webhook_secs": round(webhook_secs, 3), "direct_secs": round(direct_secs, 3),
                "msgs_per_sec": round(rate, 1), "transport_only_secs": round(transport_secs, 3), "ack_p50_ms": round(p50, 2), "ack_p99_ms": round(p99, 2), "vs_direct_capture": round(ratio, 3) }),
    );
    Ok(())
}

/// Posts `n` signed one-message webhooks to `addr` from [`CONNECTIONS`] threads, each on its own
/// connection as Meta opens them; the burst's seconds and every acknowledgement's latency (ns).
fn burst(addr: &str, n: u64, text: &str) -> BenchResult<(f64, Vec<u64>)> {
    let display: String = synth::BUSINESS_LINE.chars().filter(|c| c.is_ascii_digit()).collect();
    let now = now_ms() / 1000 - 60;
    let requests: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp", "metadata": {"display_phone_number": display, "phone_number_id": "2"},
                "messages": [{"from": "442079460018", "id": format!("wamid.BENCH{i:08}"), "timestamp": now.to_string(),
                    "type": "text", "text": {"body": text}}]}}]}]})
            .to_string();
            let head = format!(
                "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                sign(SECRET.as_bytes(), body.as_bytes()),
                body.len()
            );
            [head.into_bytes(), body.into_bytes()].concat()
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(requests);
    let started = Instant::now();
    let posters: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (next, requests, addr) = (next.clone(), requests.clone(), addr.to_string());
            std::thread::spawn(move || -> BenchResult<Vec<u64>> {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else { return Ok(latencies) };
                    let t = Instant::now();
                    let status = post(&addr, request).map_err(|e| format!("POST: {e}"))?;
                    latencies.push(t.elapsed().as_nanos() as u64);
                    if status != 200 {
                        return Err(format!("the endpoint answered {status}"));
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n as usize);
    for p in posters {
        latencies.extend(p.join().map_err(|_| "a poster panicked".to_string())??);
    }
    Ok((started.elapsed().as_secs_f64(), latencies))
}

/// One request on its own connection; the answer's status code.
fn post(addr: &str, request: &[u8]) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("no HTTP status"))
}
