//! `verbatim connect whatsapp` end to end, posting as Meta does: signed webhooks of every
//! documented shape → capture (media fetched from a Graph API stand-in over HTTPS on 127.0.0.1)
//! → one device stream per business number → upload to the real receiver → export. Bad
//! signatures refused and counted, the handshake, replays, reordered and batched entries, a full
//! queue answered 503 until an upload makes room, and a kill -9 between receipt and answer.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verbatim_core::Value;
use verbatim_core::sources::whatsapp::sign;
use verbatim_core::synth::sample_policy;

mod support;

use support::{BIN, TestArchive as Archive, source_ids, walk};

const LINE: &str = "+15550783881";
const LINE2: &str = "+15550783882";
const PERSONAL: &str = "15550009999";
const PEER: &str = "16505551234";
const TENANT: &str = "acme-wa";
const DEVICE: &str = "wa-gw";

fn secret() -> String {
    // Built at run time: no secret-shaped literal in the repository.
    format!("app-secret-{}", std::process::id())
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 120
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A webhook body for `display` (the business number as Meta writes it, digits only).
fn body(display: &str, changes: &[(&str, Json)]) -> Vec<u8> {
    let changes: Vec<Json> = changes
        .iter()
        .map(|(field, value)| {
            let mut value = value.clone();
            value["messaging_product"] = json!("whatsapp");
            value["metadata"] = json!({"display_phone_number": display.trim_start_matches('+'), "phone_number_id": "1065403"});
            json!({"field": field, "value": value})
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1022901", "changes": changes}]}).to_string().into_bytes()
}

fn msg(id: &str, kind: &str, content: Json) -> Json {
    let mut m = json!({"from": PEER, "id": id, "timestamp": now_s().to_string(), "type": kind});
    m[kind] = content;
    m
}

fn echo(id: &str, kind: &str, content: Json) -> Json {
    let mut m =
        json!({"from": LINE.trim_start_matches('+'), "to": PEER, "id": id, "timestamp": now_s().to_string(), "type": kind});
    m[kind] = content;
    m
}

// ------------------------------------------------------------------ HTTP as Meta would send it

/// One HTTP/1.1 request; the status code, or the I/O error of a connection cut short.
fn request(addr: &str, head: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("no status: {text}")))
}

fn post_signed(addr: &str, body: &[u8], signature: Option<&str>) -> std::io::Result<u16> {
    let sig = signature.map(|s| format!("X-Hub-Signature-256: {s}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{sig}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(addr, &head, body)
}

fn post(addr: &str, body: &[u8]) -> u16 {
    post_signed(addr, body, Some(&sign(secret().as_bytes(), body))).unwrap()
}

fn get(addr: &str, query: &str) -> u16 {
    request(addr, &format!("GET /webhook?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"), b"").unwrap()
}

// ------------------------------------------------------------------ the connector process

struct Connector {
    child: Child,
    addr: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Connector {
    fn start(dir: &Path, policy: &Path, graph: Option<&Graph>) -> Connector {
        Connector::start_with(dir, policy, graph, &[])
    }

    /// [`Connector::start`] with more arguments.
    fn start_with(dir: &Path, policy: &Path, graph: Option<&Graph>, extra: &[&str]) -> Connector {
        write_private(&dir.join("app-secret"), &secret());
        write_private(&dir.join("verify-token"), "verify-me-please");
        let mut args: Vec<String> = [
            "connect",
            "whatsapp",
            "--listen",
            "127.0.0.1:0",
            "--state",
            dir.join("state").to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--app-secret-file",
            dir.join("app-secret").to_str().unwrap(),
            "--verify-token-file",
            dir.join("verify-token").to_str().unwrap(),
            "--device-tokens",
            dir.join("tokens").to_str().unwrap(),
            "--media-retry-secs",
            "1",
        ]
        .map(String::from)
        .to_vec();
        if let Some(g) = graph {
            write_private(&dir.join("graph-token"), &g.token);
            args.extend(
                [
                    "--graph-url",
                    &format!("https://127.0.0.1:{}/v23.0", g.port),
                    "--access-token-file",
                    dir.join("graph-token").to_str().unwrap(),
                    "--graph-ca",
                    g.ca.to_str().unwrap(),
                ]
                .map(String::from),
            );
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut child = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, stdout) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let first = stdout.recv_timeout(Duration::from_secs(60)).expect("the connector starts");
        let addr = first.strip_prefix("listening ").expect("first line names the address").to_string();
        Connector { child, addr, stdout, stderr }
    }

    /// Waits (bounded) until `durable <id>` was printed `times` times in all; returns every
    /// line read meanwhile.
    fn wait_durable(&self, id: &str, times: usize, seen: &mut Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let want = format!("durable {id}");
        while seen.iter().filter(|l| **l == want).count() < times {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("{want} ×{times} never printed; stderr:\n{}", self.stderr.lock().unwrap()),
            }
        }
    }

    /// Everything printed so far.
    fn drain(&self, seen: &mut Vec<String>) {
        while let Ok(line) = self.stdout.try_recv() {
            seen.push(line);
        }
    }

    /// SIGTERM: the connector uploads what is queued and exits; returns its stderr.
    fn stop(mut self) -> String {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // let the stderr reader catch the last line
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(code.success(), "{code:?}: {stderr}");
        stderr
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

// ------------------------------------------------------------------ the Graph API stand-in

/// Serves `GET /v23.0/<media id>` (the media's URL, type, size and SHA-256) and `GET
/// /download/<media id>` (the bytes) over TLS, for the right bearer token only. Ids in
/// `fail_once` answer 500 to their first lookup.
struct Graph {
    port: u16,
    ca: PathBuf,
    token: String,
    served: Arc<Mutex<Vec<String>>>,
}

impl Graph {
    async fn start(dir: &Path, media: BTreeMap<String, Vec<u8>>, fail_once: HashSet<String>) -> Graph {
        let tls = verbatim_receiver::tls::ensure_self_signed(&dir.join("graph-tls")).unwrap();
        let config = verbatim_receiver::tls::server_config(&tls.cert_path, &tls.key_path).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = format!("graph-token-{}", std::process::id());
        let served = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new((media, Mutex::new(fail_once), token.clone(), served.clone(), port));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let authorised = head.lines().any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {}", state.2)));
                    let (media, fail_once, _, served, port) = (&state.0, &state.1, &state.2, &state.3, state.4);
                    served.lock().unwrap().push(path.clone());
                    let (status, ctype, payload): (&str, &str, Vec<u8>) = if !authorised {
                        ("401 Unauthorized", "text/plain", b"no".to_vec())
                    } else if let Some(id) = path.strip_prefix("/v23.0/") {
                        match media.get(id) {
                            _ if fail_once.lock().unwrap().remove(id) => {
                                ("500 Internal Server Error", "text/plain", b"later".to_vec())
                            }
                            Some(bytes) => {
                                let info = json!({"url": format!("https://127.0.0.1:{port}/download/{id}"), "mime_type": "application/octet-stream",
                                    "sha256": hex::encode(Sha256::digest(bytes)), "file_size": bytes.len(), "id": id, "messaging_product": "whatsapp"});
                                ("200 OK", "application/json", info.to_string().into_bytes())
                            }
                            None => ("404 Not Found", "text/plain", b"none".to_vec()),
                        }
                    } else if let Some(bytes) = path.strip_prefix("/download/").and_then(|id| media.get(id)) {
                        ("200 OK", "application/octet-stream", bytes.clone())
                    } else {
                        ("404 Not Found", "text/plain", b"none".to_vec())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        payload.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&payload).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Graph { port, ca: tls.ca_path, token, served }
    }
}

// ------------------------------------------------------------------ the archive

/// This file's policies, on the shared test archive.
impl Archive {
    /// The connector's policy (business numbers `lines`) and a device token per number in
    /// `dir/tokens`, each issued by the receiver for that number's device.
    fn policy_file(&self, dir: &Path, lines: &[&str], extra: &[(&str, Value)]) -> PathBuf {
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        for line in lines {
            let token =
                verbatim_receiver::add_device(&self.data.join("tokens.jsonl"), TENANT, &format!("{DEVICE}-{line}")).unwrap();
            write_private(&dir.join("tokens").join(line), token.expose());
        }
        let s = |v: &str| Value::String(v.to_string());
        let mut overrides = vec![
            ("tenant_id", s(TENANT)),
            ("device_id", s(DEVICE)),
            ("business_lines", Value::List(lines.iter().map(|l| s(l)).collect())),
            ("archive_ca_pem", s(self.receiver.ca_pem().unwrap())),
        ];
        overrides.extend(extra.iter().cloned());
        let policy = sample_policy(&self.receiver.url(), &self.public, "token-of-no-device", &overrides);
        let path = dir.join("policy.json");
        std::fs::write(&path, serde_json::to_vec(&policy).unwrap()).unwrap();
        path
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_shape_reaches_the_archive_once_on_its_own_numbers_stream() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy = archive.policy_file(dir.path(), &[LINE, LINE2], &[]);
    let media: BTreeMap<String, Vec<u8>> = ["img", "doc", "aud", "vid", "stk", "late"]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), (0..20_000 + i * 1000).map(|b| (b * 7 + i) as u8).collect()))
        .collect();
    let graph = Graph::start(dir.path(), media.clone(), HashSet::from(["late".to_string()])).await;
    // Logging everything: still no content, secret or token in what it writes.
    let c = Connector::start_with(dir.path(), &policy, Some(&graph), &["--log-level", "trace"]);
    let a = c.addr.clone();

    // The subscription handshake.
    assert_eq!(get(&a, "hub.mode=subscribe&hub.verify_token=verify-me-please&hub.challenge=1158201444"), 200);
    assert_eq!(get(&a, "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444"), 403);

    let mut reply = msg("wamid.T2", "text", json!({"body": "yes, this one"}));
    reply["context"] = json!({"from": LINE.trim_start_matches('+'), "id": "wamid.E1"});
    let inbound = body(
        LINE,
        &[(
            "messages",
            json!({"contacts": [{"profile": {"name": "Kerry"}, "wa_id": PEER}], "messages": [
            msg("wamid.T1", "text", json!({"body": "Can we talk about the bond?"})),
            reply,
            msg("wamid.IMG", "image", json!({"id": "img", "mime_type": "image/jpeg", "caption": "term sheet"})),
            msg("wamid.DOC", "document", json!({"id": "doc", "mime_type": "application/pdf", "filename": "deck.pdf"})),
            msg("wamid.AUD", "audio", json!({"id": "aud", "mime_type": "audio/ogg", "voice": true})),
            msg("wamid.VID", "video", json!({"id": "vid", "mime_type": "video/mp4"})),
            msg("wamid.STK", "sticker", json!({"id": "stk", "mime_type": "image/webp", "animated": false})),
            msg("wamid.LATE", "image", json!({"id": "late", "mime_type": "image/png"})),
            msg("wamid.R1", "reaction", json!({"message_id": "wamid.E1", "emoji": "👍"})),
            msg("wamid.LOC", "location", json!({"latitude": 51.5, "longitude": -0.12, "name": "Head office"})),
            msg("wamid.CON", "contacts", json!(null)),
            msg("wamid.UED", "edit", json!({"original_message_id": "wamid.T1", "message": {"type": "text", "text": {"body": "Can we talk about the bond today?"}}})),
            msg("wamid.URV", "revoke", json!({"original_message_id": "wamid.T2"})),
            ]}),
        )],
    );
    let mut inbound_json: Json = serde_json::from_slice(&inbound).unwrap();
    inbound_json["entry"][0]["changes"][0]["value"]["messages"][10]["contacts"] =
        json!([{"name": {"formatted_name": "Desk Two"}, "phones": [{"phone": "+44 20 7946 0000"}]}]);
    let inbound = inbound_json.to_string().into_bytes();
    // Echoes of what the employee sent from the app, edited and revoked there; a status; a
    // contact sync; and the history shared at onboarding.
    let echoes = body(
        LINE,
        &[
            (
                "smb_message_echoes",
                json!({"message_echoes": [
                echo("wamid.E1", "text", json!({"body": "Here is the bond"})),
                echo("wamid.E2", "text", json!({"body": "typo"})),
                echo("wamid.E3", "edit", json!({"original_message_id": "wamid.E2", "message": {"type": "text", "text": {"body": "fixed"}}})),
                echo("wamid.E4", "revoke", json!({"original_message_id": "wamid.E2"})),
                ]}),
            ),
            (
                "messages",
                json!({"statuses": [{"id": "wamid.E1", "status": "read", "timestamp": now_s().to_string(), "recipient_id": PEER}]}),
            ),
            (
                "smb_app_state_sync",
                json!({"state_sync": [{"type": "contact", "contact": {"full_name": "Kerry", "phone_number": PEER}, "action": "add", "metadata": {"timestamp": now_s().to_string()}}]}),
            ),
            (
                "history",
                json!({"history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": [{"id": PEER, "messages": [
                    {"from": LINE.trim_start_matches('+'), "id": "wamid.H1", "timestamp": (now_s() - 86_400).to_string(), "type": "text", "text": {"body": "last week"}, "history_context": {"status": "READ"}},
                    {"from": PEER, "id": "wamid.H2", "timestamp": (now_s() - 86_000).to_string(), "type": "text", "text": {"body": "thanks"}, "history_context": {"status": "DELIVERED"}}]}]}]}),
            ),
        ],
    );
    // Two entries in one delivery, the reaction before the message it reacts to; the second
    // number; a number not in business_lines.
    let reordered = json!({"object": "whatsapp_business_account", "entry": [
        serde_json::from_slice::<Json>(&body(LINE, &[("messages", json!({"messages": [msg("wamid.R2", "reaction", json!({"message_id": "wamid.T3", "emoji": "✅"}))]}))])).unwrap()["entry"][0],
        serde_json::from_slice::<Json>(&body(LINE, &[("messages", json!({"messages": [msg("wamid.T3", "text", json!({"body": "done"}))]}))])).unwrap()["entry"][0],
    ]})
    .to_string()
    .into_bytes();
    let second = body(LINE2, &[("messages", json!({"messages": [msg("wamid.L2", "text", json!({"body": "other desk"}))]}))]);
    let personal = body(PERSONAL, &[("messages", json!({"messages": [msg("wamid.P", "text", json!({"body": "dinner?"}))]}))]);

    for b in [&inbound, &echoes, &reordered, &second, &personal] {
        assert_eq!(post(&a, b), 200);
    }
    // Meta delivers again (a timeout on its side), and an attacker posts a forged body.
    assert_eq!(post(&a, &inbound), 200);
    assert_eq!(post(&a, &echoes), 200);
    assert_eq!(post_signed(&a, &personal, Some(&sign(b"not the app secret", &personal))).unwrap(), 401);
    assert_eq!(post_signed(&a, &personal, None).unwrap(), 401);

    // The media whose first fetch failed: omitted now, captured by the retry under the same id.
    let mut seen = Vec::new();
    c.wait_durable("wamid.LATE/image", 2, &mut seen);
    c.drain(&mut seen);
    let stderr = c.stop();
    assert!(stderr.contains("2 webhooks refused for their signature"), "{stderr}");
    let durable: Vec<&String> = seen.iter().filter(|l| l.starts_with("durable ")).collect();
    let unique: HashSet<&&String> = durable.iter().collect();
    assert_eq!(unique.len() + 1, durable.len(), "only the retried media twice: {durable:?}");
    assert!(!seen.iter().any(|l| l.contains("wamid.P")), "the personal number captured nothing");
    assert!(!dir.path().join("state").join(format!("+{PERSONAL}")).exists(), "nor stored anything");
    assert!(graph.served.lock().unwrap().iter().all(|p| !p.contains("token")), "the token never in a URL");

    let (lines, out_dir) = archive.export(dir.path()).await;
    assert_eq!(
        source_ids(&lines, "message"),
        [
            "wamid.AUD",
            "wamid.CON",
            "wamid.DOC",
            "wamid.E1",
            "wamid.E2",
            "wamid.H1",
            "wamid.H2",
            "wamid.IMG",
            "wamid.L2",
            "wamid.LATE",
            "wamid.LOC",
            "wamid.STK",
            "wamid.T1",
            "wamid.T2",
            "wamid.T3",
            "wamid.VID"
        ]
    );
    assert_eq!(source_ids(&lines, "edit"), ["wamid.E3", "wamid.UED"]);
    assert_eq!(source_ids(&lines, "unsend"), ["wamid.E4", "wamid.URV"]);
    assert_eq!(source_ids(&lines, "reaction"), ["wamid.R1", "wamid.R2"]);
    assert_eq!(source_ids(&lines, "attachment_omitted"), ["wamid.LATE/image"]);
    let of = |id: &str| lines.iter().find(|l| l["meta"]["source_id"] == id).unwrap().clone();
    let t2 = of("wamid.T2");
    assert_eq!((t2["reply_to"].as_str(), t2["direction"].as_str()), (Some("wamid.E1"), Some("inbound")));
    let e1 = of("wamid.E1");
    assert_eq!(
        (e1["direction"].as_str(), e1["sender"].as_str(), e1["recipients"][0].as_str()),
        (Some("outbound"), Some(LINE), Some("+16505551234"))
    );
    assert_eq!(of("wamid.UED")["new_text"], "Can we talk about the bond today?");
    assert_eq!(of("wamid.LOC")["text"], "[location] 51.5,-0.12; Head office");
    assert_eq!(of("wamid.CON")["text"], "[contact] Desk Two, +44 20 7946 0000");
    assert_eq!(of("wamid.IMG")["text"], "term sheet");
    assert_eq!(of("wamid.IMG")["attachment_ids"][0], "wamid.IMG/image");
    // Every media's bytes, as the Graph API served them, in the export.
    let exported: BTreeMap<String, Vec<u8>> = walk(&out_dir)
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("attachments")))
        .map(|p| (hex::encode(Sha256::digest(std::fs::read(&p).unwrap())), std::fs::read(&p).unwrap()))
        .collect();
    for (id, bytes) in &media {
        assert!(exported.contains_key(&hex::encode(Sha256::digest(bytes))), "media {id} missing from the export");
    }
    assert_eq!(exported.len(), media.len());
    // One stream per business number: LINE2's message came from its own device.
    let file_of = |id: &str| of(id)["_file"].as_str().unwrap().to_string();
    assert_ne!(Path::new(&file_of("wamid.L2")).parent(), Path::new(&file_of("wamid.T1")).parent());
    // (The export writes the device `wa-gw-+15550783882` as a safe file name.)
    assert!(file_of("wamid.L2").contains(&format!("{DEVICE}--{}", &LINE2[1..])), "{}", file_of("wamid.L2"));
    // Nothing of the content in the connector's stores or its output.
    for (path, bytes) in walk(&dir.path().join("state")).iter().map(|p| (p, std::fs::read(p).unwrap())) {
        for needle in [&b"Can we talk"[..], b"term sheet", b"Head office"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds content", path.display());
        }
    }
    for needle in ["bond", "term sheet", "Head office", "Desk Two", &secret(), &graph.token, "verify-me-please"] {
        assert!(!stderr.contains(needle), "{needle:?} in the connector's log:\n{stderr}");
    }
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG") || stderr.contains("INFO"), "the log was on: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_the_redelivery_succeeds_once_an_upload_made_room() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    // The smallest queue a policy allows (16 MB), an upload interval far away: only the full
    // queue can start an upload.
    let policy = archive.policy_file(
        dir.path(),
        &[LINE],
        &[("queue_max_mb", Value::Integer(16)), ("upload_interval_minutes", Value::Integer(1440))],
    );
    let c = Connector::start(dir.path(), &policy, None);
    let words: String = (0..60_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let bodies: Vec<(Vec<String>, Vec<u8>)> = (0..20)
        .map(|b| {
            let ids: Vec<String> = (0..20).map(|i| format!("wamid.Q{b}-{i}")).collect();
            let messages: Vec<Json> = ids.iter().map(|id| msg(id, "text", json!({"body": words}))).collect();
            (ids, body(LINE, &[("messages", json!({ "messages": messages }))]))
        })
        .collect();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    for (_, b) in &bodies {
        // Meta redelivers with back-off until it is acknowledged.
        loop {
            match post(&c.addr, b) {
                200 => break,
                503 => refused += 1,
                other => panic!("answered {other}"),
            }
            assert!(Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(refused > 0, "the queue never filled: the test proves nothing");
    let stderr = c.stop();
    let (lines, _) = archive.export(dir.path()).await;
    let mut want: Vec<String> = bodies.iter().flat_map(|(ids, _)| ids.clone()).collect();
    want.sort();
    assert_eq!(source_ids(&lines, "message"), want, "every message exactly once; stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_receipt_and_answer_loses_nothing_acknowledged_and_captures_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::start(dir.path()).await;
    let policy = archive.policy_file(dir.path(), &[LINE], &[]);
    const N: usize = 40;
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            body(
                LINE,
                &[("messages", json!({"messages": [msg(&format!("wamid.K{i:02}"), "text", json!({"body": format!("m{i}")}))]}))],
            )
        })
        .collect();
    let c = Connector::start(dir.path(), &policy, None);
    // Meta's side: posts in order, noting what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let poster = {
        let (addr, bodies, acked) = (c.addr.clone(), bodies.clone(), acked.clone());
        std::thread::spawn(move || {
            for (i, b) in bodies.iter().enumerate() {
                match post_signed(&addr, b, Some(&sign(secret().as_bytes(), b))) {
                    Ok(200) => acked.lock().unwrap().push(i),
                    _ => return, // the connector is gone
                }
            }
        })
    };
    // Killed the moment message 15 is durable: its answer is being written, or not yet.
    let mut seen = Vec::new();
    c.wait_durable("wamid.K15", 1, &mut seen);
    c.kill9();
    poster.join().unwrap();
    let acked_first = acked.lock().unwrap().clone();
    assert!(acked_first.len() >= 15 && acked_first.len() < N, "{acked_first:?}");

    // Restarted: Meta delivers everything not acknowledged, and (a replay) the rest again.
    let c = Connector::start(dir.path(), &policy, None);
    for b in &bodies {
        assert_eq!(post(&c.addr, b), 200);
    }
    c.drain(&mut seen);
    let stderr = c.stop();
    let (lines, _) = archive.export(dir.path()).await;
    let want: Vec<String> = (0..N).map(|i| format!("wamid.K{i:02}")).collect();
    assert_eq!(source_ids(&lines, "message"), want, "every message exactly once, the acknowledged ones included; {stderr}");
}

#[test]
fn a_secret_file_readable_by_others_is_refused_by_name_never_by_content() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let policy = sample_policy("https://archive.acme.test", &public, "tok", &[("business_lines", Value::String(LINE.into()))]);
    std::fs::write(dir.path().join("policy.json"), serde_json::to_vec(&policy).unwrap()).unwrap();
    let content = secret();
    std::fs::write(dir.path().join("app-secret"), &content).unwrap();
    std::fs::set_permissions(dir.path().join("app-secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&dir.path().join("verify-token"), "v");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["connect", "whatsapp", "--listen", "127.0.0.1:0", "--state", &p("state"), "--policy", &p("policy.json")])
        .args(["--app-secret-file", &p("app-secret"), "--verify-token-file", &p("verify-token")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&p("app-secret")) && stderr.contains("mode 644"), "{stderr}");
    assert!(!stderr.contains(&content), "{stderr}");
    assert!(!dir.path().join("state").exists(), "nothing started");
}
