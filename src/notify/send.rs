//! One notification request over HTTP(S), with reqwest (the client OpenDAL already
//! brings, with rustls). What goes wrong is said without the URL, which is a secret.

use std::time::Duration;

/// A POST, ready to send.
#[derive(Debug)]
pub(super) struct Request {
    pub url: url::Url,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How long to wait before the one retry of a request that could not connect or got
/// a 429 or 5xx answer (as `curl --retry` would, once).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most this much of an error answer's body is quoted.
const QUOTED: usize = 200;

/// Sends `request`; `Err` says why it was not delivered (never the URL).
pub(super) async fn post(
    client: &reqwest::Client,
    request: &Request,
    timeout: Duration,
) -> Result<(), String> {
    let mut retried = false;
    loop {
        let mut builder = client
            .post(request.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let (why, transient) = match builder.send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => {
                let status = answer.status();
                let transient = status.is_server_error() || status.as_u16() == 429;
                let text = answer.text().await.unwrap_or_default();
                let text: String = text.trim().chars().take(QUOTED).collect();
                let why = if text.is_empty() {
                    format!("the service answered HTTP {status}")
                } else {
                    format!("the service answered HTTP {status}: {text}")
                };
                (why, transient)
            }
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                ));
            }
            Err(e) => (describe(e), true),
        };
        if !transient || retried {
            return Err(why);
        }
        retried = true;
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// What went wrong, without the URL: `cannot connect: Connection refused (os error
/// 111)`, or the error and its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        causes.push(c.to_string());
        cause = c.source();
    }
    match causes.last() {
        Some(root) if e.is_connect() => format!("cannot connect: {root}"),
        _ => std::iter::once(e.to_string())
            .chain(causes)
            .collect::<Vec<_>>()
            .join(": "),
    }
}
