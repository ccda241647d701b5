//! The daemon's HTTP endpoints, on hyper (already in the tree under reqwest and
//! OpenDAL; only its server half is added): `GET /healthz` answers 200 with the
//! daemon's state as JSON while the loop runs, 503 once it is stopping.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::{Health, Shared};
use crate::apply::Stop;

/// Serves until the runtime ends; a connection that fails affects only itself.
pub(super) async fn serve(listener: tokio::net::TcpListener, health: Shared, stop: Stop) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &health, &stop);
                async move { Ok::<_, Infallible>(response) }
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

fn respond(request: &Request<Incoming>, health: &Shared, stop: &Stop) -> Response<Full<Bytes>> {
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
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the daemon serves /healthz\n".into(),
        ),
    }
}
