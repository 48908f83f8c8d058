//! The upload API's handlers (docs/upload-api.md). Every error answer is an `ApiError` JSON
//! body. Logs carry status codes, sizes and sequence numbers only: never a token, an
//! identifier from the body, or ciphertext.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use verbatim_core::chain::StreamId;
use verbatim_core::wire::{ApiError, Batch, CONTENT_TYPE, Cursor};

use super::Limits;
use super::auth::{AuthGate, Refusal};
use crate::faults::{Fault, FaultPlan};
use crate::store::{ArchiveStore, Mode, Outcome};
use crate::tokens::{DeviceIdentity, check_identifier};

pub(crate) struct AppState {
    pub store: Arc<dyn ArchiveStore>,
    pub auth: AuthGate,
    /// Authenticated requests being handled at once; beyond it, 503 + Retry-After rather than
    /// a queue. Taken only after authentication: a refused request never holds one.
    pub permits: Arc<Semaphore>,
    pub limits: Limits,
    pub faults: Option<FaultPlan>,
}

/// Put in every request by the connection task: notifying it drops the connection at once,
/// without an answer (fault injection only).
#[derive(Clone)]
pub(crate) struct ConnKill(pub Arc<Notify>);

/// Put in every request by the connection task: the client's address (for throttling repeated
/// authentication failures; never logged).
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub Option<SocketAddr>);

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/batches", post(post_batch))
        .route("/v1/streams/{stream}/cursor", get(get_cursor))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None) })
        .method_not_allowed_fallback(|| async {
            api_error(StatusCode::METHOD_NOT_ALLOWED, "not_found", "method not allowed on this endpoint", None)
        })
        // Bodies are read, bounded and timed by the handler itself.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn api_error(status: StatusCode, error: &str, reason: &str, expected_seq: Option<u64>) -> Response {
    let body = ApiError { error: error.to_string(), reason: reason.to_string(), expected_seq, archive_key_id: None };
    (status, axum::Json(body)).into_response()
}

fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn overloaded(limits: &Limits) -> Response {
    with_retry_after(
        api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the archive is busy; retry after the given delay", None),
        limits.retry_after_secs,
    )
}

fn unauthorized() -> Response {
    // One answer for a missing, malformed, unknown or wrong token: no oracle.
    let mut resp = api_error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid device token", None);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn store_unavailable() -> Response {
    with_retry_after(api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the archive store is unavailable", None), 5)
}

/// The answer to a request refused at authentication, sent after any delay the gate asks for.
async fn refusal(refused: Refusal, limits: &Limits) -> Response {
    match refused {
        Refusal::Unauthorized { delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            unauthorized()
        }
        Refusal::Throttled { retry_after_secs } => with_retry_after(
            api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications from this address; retry after the given delay",
                None,
            ),
            retry_after_secs,
        ),
        Refusal::Busy => with_retry_after(
            api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the archive is busy; retry after the given delay", None),
            limits.retry_after_secs,
        ),
    }
}

/// Authenticates, then takes a request slot: `Err` is the answer to send.
async fn admit(
    st: &AppState,
    headers: &HeaderMap,
    peer: Option<Peer>,
) -> Result<(DeviceIdentity, OwnedSemaphorePermit), Response> {
    let ip = peer.and_then(|p| p.0).map(|a| a.ip());
    let identity = match st.auth.authenticate(headers, ip).await {
        Ok(identity) => identity,
        Err(refused) => {
            tracing::info!(status = refusal_status(refused), "request refused: not authenticated");
            return Err(refusal(refused, &st.limits).await);
        }
    };
    match st.permits.clone().try_acquire_owned() {
        Ok(permit) => Ok((identity, permit)),
        Err(_) => {
            tracing::info!(status = 503, "request refused: over the concurrency limit");
            Err(overloaded(&st.limits))
        }
    }
}

fn refusal_status(r: Refusal) -> u16 {
    match r {
        Refusal::Unauthorized { .. } => 401,
        Refusal::Throttled { .. } => 429,
        Refusal::Busy => 503,
    }
}

/// The 422 body for an epoch sealed to an archive key this archive does not accept: the
/// `ApiError` fields plus the key id, so the device can report exactly which key it used.
#[derive(Serialize)]
struct UnknownArchiveKeyError<'a> {
    error: &'static str,
    reason: &'a str,
    archive_key_id: &'a str,
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_batch_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(CONTENT_TYPE))
        .unwrap_or(false)
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
}

/// Reads the whole body, refusing more than `max` bytes or taking longer than `timeout`
/// (a stalled client cannot hold a request slot for ever).
async fn read_body(mut body: Body, max: usize, declared: Option<u64>, timeout: Duration) -> Result<Vec<u8>, BodyError> {
    let read = async {
        let mut out = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > max {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(BodyError::Timeout))
}

/// Reads and discards what is left of the body (bounded in size and time) before an early
/// answer: closing a socket with unread data makes the peer see a reset instead of the answer.
async fn drain_then(mut body: Body, limits: &Limits, resp: Response) -> Response {
    let cap = limits.max_body_bytes.saturating_mul(2);
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len();
                if seen > cap {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(limits.body_timeout, drain).await;
    resp
}

/// Drops the connection without answering (fault injection). Never returns.
async fn drop_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(k) => {
            k.0.notify_one();
            std::future::pending::<Response>().await
        }
        None => api_error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable", "connection could not be dropped", None),
    }
}

fn fault_status(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = match status.as_u16() {
        429 => "rate_limited",
        401 => "unauthorized",
        403 => "forbidden",
        409 => "conflict",
        413 => "too_large",
        400 => "malformed",
        404 => "not_found",
        _ => "unavailable",
    };
    let resp = api_error(status, error, "injected fault", None);
    match retry_after {
        Some(s) => with_retry_after(resp, s),
        None => resp,
    }
}

async fn post_batch(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let limits = &st.limits;

    let peer = parts.extensions.get::<Peer>().copied();
    let (identity, _permit) = match admit(&st, &parts.headers, peer).await {
        Ok(admitted) => admitted,
        Err(resp) => return drain_then(body, limits, resp).await,
    };
    if !is_batch_content_type(&parts.headers) {
        let reason = format!("Content-Type must be {CONTENT_TYPE}");
        return drain_then(body, limits, api_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "malformed", &reason, None)).await;
    }
    let declared = content_length(&parts.headers);
    let too_large = || {
        let reason = format!("batch body exceeds {} bytes", limits.max_body_bytes);
        api_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &reason, None)
    };
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        tracing::info!(status = 413, bytes = declared, "batch refused: too large");
        return drain_then(body, limits, too_large()).await;
    }

    let fault = st.faults.as_ref().and_then(FaultPlan::take);
    match &fault {
        Some(Fault::Status { code, retry_after_secs }) => {
            tracing::info!(status = code, "injected fault: status");
            return drain_then(body, limits, fault_status(*code, *retry_after_secs)).await;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::DropConnection) => {
            // Read a first part of the body, as a connection lost mid-upload would.
            let mut body = body;
            let _ = tokio::time::timeout(limits.body_timeout, body.frame()).await;
            tracing::info!("injected fault: connection dropped mid-body");
            return drop_connection(kill).await;
        }
        _ => {}
    }

    let bytes = match read_body(body, limits.max_body_bytes, declared, limits.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            tracing::info!(status = 413, "batch refused: too large");
            return too_large();
        }
        Err(BodyError::Timeout) => {
            tracing::info!(status = 408, "batch refused: body not received in time");
            let reason = format!("request body not received within {} s", limits.body_timeout.as_secs());
            return with_retry_after(
                api_error(StatusCode::REQUEST_TIMEOUT, "unavailable", &reason, None),
                limits.retry_after_secs,
            );
        }
        Err(BodyError::Broken) => return api_error(StatusCode::BAD_REQUEST, "malformed", "request body could not be read", None),
    };
    let size = bytes.len();
    let batch = match Batch::decode(&bytes) {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(status = 400, bytes = size, "batch refused: malformed");
            return api_error(StatusCode::BAD_REQUEST, "malformed", &e.reason, None);
        }
    };
    drop(bytes);
    if batch.stream.tenant != identity.tenant || batch.stream.device != identity.device {
        tracing::info!(status = 403, bytes = size, "batch refused: stream of another device");
        return api_error(StatusCode::FORBIDDEN, "forbidden", "the batch's tenant and device are not this token's", None);
    }
    let records = batch.records.len();
    let first_seq = batch.records.first().map(|r| r.seq).unwrap_or(0);
    let last_seq = batch.records.last().map(|r| r.seq).unwrap_or(0);
    let mode = if fault == Some(Fault::CrashBeforeCommit) { Mode::RollBack } else { Mode::Commit };

    let outcome = st.store.submit(batch, mode).await;
    if matches!(fault, Some(Fault::CrashBeforeCommit | Fault::DropAfterCommit)) {
        tracing::info!(first_seq, last_seq, "injected fault: connection dropped before the answer");
        return drop_connection(kill).await;
    }
    let resp = match outcome {
        Ok(Outcome::Stored(ack)) => {
            tracing::info!(
                status = 200,
                bytes = size,
                records,
                first_seq,
                last_seq,
                stored = ack.stored,
                duplicates = ack.duplicates,
                acked_through = ack.acked_through,
                ms = started.elapsed().as_millis() as u64,
                "batch stored"
            );
            (StatusCode::OK, axum::Json(ack)).into_response()
        }
        Ok(Outcome::Gap { expected }) => {
            tracing::info!(status = 409, first_seq, expected, "batch refused: gap");
            let reason = format!("sequence gap: the batch starts at {first_seq}, the archive expects {expected}");
            api_error(StatusCode::CONFLICT, "gap", &reason, Some(expected))
        }
        Ok(Outcome::Conflict { expected, reason }) => {
            tracing::warn!(status = 409, first_seq, last_seq, expected, "batch refused: conflict");
            api_error(StatusCode::CONFLICT, "conflict", &reason, Some(expected))
        }
        Ok(Outcome::UnknownArchiveKey { epoch, key_id }) => {
            tracing::warn!(status = 422, epoch, "batch refused: epoch sealed to an archive key this archive does not accept");
            let reason = crate::store::unknown_key_reason(epoch, &key_id);
            let body = UnknownArchiveKeyError { error: "unknown_archive_key", reason: &reason, archive_key_id: &key_id };
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
        }
        Ok(Outcome::StreamLimit { limit }) => {
            tracing::warn!(status = 422, limit, "batch refused: the device has as many streams as the archive accepts");
            let reason = format!(
                "this device already has {limit} streams, the most this archive accepts per device; an administrator must raise the limit"
            );
            api_error(StatusCode::UNPROCESSABLE_ENTITY, "stream_limit", &reason, None)
        }
        Err(e) => {
            tracing::error!(error = %e, "archive store failed");
            store_unavailable()
        }
    };
    if fault == Some(Fault::GarbageBody) {
        tracing::info!("injected fault: garbage body");
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "<<< not json").into_response();
    }
    resp
}

async fn get_cursor(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let (identity, _permit) = match admit(&st, &headers, peer.map(|p| p.0)).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let stream = match path {
        Ok(Path(s)) if check_identifier("stream", &s).is_ok() => s,
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "malformed",
                "stream id must be 1 to 256 bytes without control characters",
                None,
            );
        }
    };
    let id = StreamId { tenant: identity.tenant, device: identity.device, stream };
    match st.store.cursor(id.clone()).await {
        Ok((acked_through, link)) => {
            tracing::debug!(status = 200, acked_through, "cursor");
            let body =
                Cursor { tenant: id.tenant, device: id.device, stream: id.stream, acked_through, last_link: hex::encode(link) };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "archive store failed");
            store_unavailable()
        }
    }
}
