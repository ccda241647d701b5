//! The daemon's HTTP endpoints, on hyper (already in the tree under reqwest and
//! OpenDAL; only its server half is added): `GET /healthz` answers 200 with the
//! daemon's state as JSON while the loop runs, 503 once it is stopping; `GET /metrics`
//! the Prometheus text of `backplan status --format prometheus`, computed at each
//! scrape from the policy and the destinations.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::{Health, Shared};
use crate::apply::Stop;
use crate::error::{Code, Failure};

/// Serves until the runtime ends; a connection that fails affects only itself.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    health: Shared,
    stop: Stop,
    policy: PathBuf,
) {
    let policy = Arc::new(policy);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        let stop = stop.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (health, stop, policy) = (health.clone(), stop.clone(), policy.clone());
                async move { Ok::<_, Infallible>(respond(&request, &health, &stop, &policy).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `/healthz` as JSON: `status` (`ok`, or `stopping` with status 503) and the state.
#[derive(Serialize)]
struct HealthView<'a> {
    status: &'static str,
    #[serde(flatten)]
    health: &'a Health,
}

async fn respond(
    request: &Request<Incoming>,
    health: &Shared,
    stop: &Stop,
    policy: &Path,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
        if let Ok(value) = "GET, HEAD".parse() {
            response.headers_mut().insert(hyper::header::ALLOW, value);
        }
        return response;
    }
    match request.uri().path() {
        "/healthz" => {
            let health = health.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let stopping = stop.requested();
            let body = crate::render::json(&HealthView {
                status: if stopping { "stopping" } else { "ok" },
                health: &health,
            });
            let status = if stopping {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            reply(status, "application/json", body)
        }
        "/metrics" => match metrics(policy).await {
            Ok(text) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            Err(f) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{}: {}\n", f.code.id(), f.message),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the daemon serves /healthz and /metrics\n".into(),
        ),
    }
}

/// The metrics of the destinations as they are now: the policy read again (an edit
/// shows at the next scrape) and the inventory read from the destinations, so a run
/// of another host, a verify or a drill shows too. A policy that cannot be read is a
/// failed scrape (503), never stale or made-up figures.
async fn metrics(policy: &Path) -> Result<String, Failure> {
    let policy = crate::policy::load_file(policy)
        .map_err(|report| Failure::new(Code::RunNotStarted, report.to_string()))?
        .policy;
    let key = crate::repo::repository_key(&policy).ok().flatten();
    let inventory = crate::repo::read_inventory(&policy, key.as_ref()).await;
    Ok(crate::render::metrics::text(&crate::status::status(
        &policy,
        &inventory,
        chrono::Utc::now(),
    )))
}
