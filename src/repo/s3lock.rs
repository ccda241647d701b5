//! The S3 Object Lock requests OpenDAL 0.59 does not make: reading an object's
//! retention (a HEAD's `x-amz-object-lock-mode` and
//! `x-amz-object-lock-retain-until-date`), extending it (`PutObjectRetention`), and
//! reading the bucket's default retention (`GetObjectLockConfiguration`).
//!
//! Requests are signed with `reqsign-aws-v4`, the SigV4 signer OpenDAL itself signs
//! S3 requests with, and sent with `reqwest`; both are in the build already. The
//! destination's keys are used when the policy gives them, else the `AWS_*`
//! variables of the environment. Addressing is path-style
//! (`endpoint/bucket/key`), as OpenDAL's is by default.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer};
use serde::{Deserialize, Serialize};

use crate::error::{Code, Failure};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How often a request that failed for a temporary reason (a connection, a 5xx, a
/// 429) is sent in all.
const TRIES: u32 = 4;
/// How many requests run at once when many packs are read or extended.
pub const CONCURRENCY: usize = 16;
/// A pack's lock that ends at most this long before the date it must reach counts
/// as reaching it: the packs a snapshot writes are locked by the bucket seconds
/// before its header records its own date, and S3's dates are whole seconds.
pub const LOCK_SLACK: chrono::Duration = chrono::Duration::minutes(2);

/// An Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// As S3 writes it.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    fn from_s3(s: &str) -> Option<LockMode> {
        match s.trim() {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// One object version's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: LockMode,
    pub until: DateTime<Utc>,
}

/// The bucket's default retention (its Object Lock configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    pub mode: LockMode,
    /// `Days`, or `Years` as 365 days each (as S3 counts them).
    pub days: u32,
}

/// What a snapshot's packs needed of their locks after a backup, and what was done
/// (`object_lock.extend`): each pack's retention read, and the ones ending before
/// `until` extended to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockExtension {
    pub destination: String,
    /// The snapshot's `retain_until`: what its packs' locks must reach.
    pub until: DateTime<Utc>,
    /// Packs of the snapshot whose retention was read.
    pub checked: usize,
    /// Packs whose lock ended too soon and now ends at `until`.
    pub extended: usize,
    /// What stopped it (BP257): the packs not extended keep their earlier lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// Signed S3 requests on one destination's bucket, for its Object Lock.
#[derive(Clone)]
pub struct ObjectLockApi {
    destination: String,
    client: reqwest::Client,
    signer: Signer<Credential>,
    /// `<endpoint>/<bucket>`.
    bucket_url: String,
    /// The repository's prefix in the bucket, with no slash at either end.
    root: String,
}

impl std::fmt::Debug for ObjectLockApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the signer: it holds the keys.
        f.debug_struct("ObjectLockApi")
            .field("destination", &self.destination)
            .field("bucket_url", &self.bucket_url)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The settings of an S3 destination the requests need, secrets resolved.
#[derive(Debug)]
pub struct S3Target<'a> {
    pub bucket: &'a str,
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub root: Option<&'a str>,
    pub keys: Option<(String, String)>,
}

impl ObjectLockApi {
    pub fn new(destination: &str, target: S3Target<'_>) -> Result<ObjectLockApi, Failure> {
        let region = target
            .region
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = match target.endpoint {
            Some(e) if e.starts_with("http") => e.trim_end_matches('/').to_string(),
            Some(e) => format!("https://{}", e.trim_end_matches('/')),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let ctx = Context::new().with_env(OsEnv);
        let mut chain = ProvideCredentialChain::new().push(
            DefaultCredentialProvider::builder()
                .no_profile()
                .no_imds()
                .build(),
        );
        if let Some((id, secret)) = target.keys {
            chain = chain.push_front(reqsign_aws_v4::StaticCredentialProvider::new(&id, &secret));
        }
        let signer = Signer::new(ctx, chain, RequestSigner::new("s3", &region));
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| {
                Failure::new(
                    Code::DestinationUnreadable,
                    format!("destination {destination}: an HTTP client: {e}"),
                )
            })?;
        Ok(ObjectLockApi {
            destination: destination.to_string(),
            client,
            signer,
            bucket_url: format!("{endpoint}/{}", encode(target.bucket)),
            root: target.root.unwrap_or("").trim_matches('/').to_string(),
        })
    }

    /// The URL of the repository's object at `path`, with `query` (`retention`).
    fn object_url(&self, path: &str, query: &str) -> String {
        let key = match self.root.is_empty() {
            true => path.trim_start_matches('/').to_string(),
            false => format!("{}/{}", self.root, path.trim_start_matches('/')),
        };
        let mut url = format!("{}/{}", self.bucket_url, encode(&key));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    fn failure(&self, code: Code, what: &str, why: impl std::fmt::Display) -> Failure {
        Failure::new(
            code,
            format!("destination {}: {what}: {why}", self.destination),
        )
    }

    /// Sends one signed request, tried again on temporary failures; the status,
    /// headers and body of the answer.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
        code: Code,
        what: &str,
    ) -> Result<(http::StatusCode, http::HeaderMap, String), Failure> {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=TRIES {
            let mut builder = http::Request::builder().method(method.clone()).uri(url);
            for (name, value) in headers {
                builder = builder.header(*name, value);
            }
            let digest = hex(&openssl::sha::sha256(&body));
            builder = builder.header("x-amz-content-sha256", digest);
            let request = builder.body(()).map_err(|e| self.failure(code, what, e))?;
            let (mut parts, ()) = request.into_parts();
            self.signer
                .sign(&mut parts, None)
                .await
                .map_err(|e| self.failure(code, what, format!("signing the request: {e}")))?;
            let mut request = self.client.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                request = request.header(name, value);
            }
            let temporary = |status: http::StatusCode| {
                status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
            };
            match request.body(body.clone()).send().await {
                Ok(answer) if attempt < TRIES && temporary(answer.status()) => {}
                Ok(answer) => {
                    let status = answer.status();
                    let headers = answer.headers().clone();
                    let text = answer.text().await.unwrap_or_default();
                    return Ok((status, headers, text));
                }
                Err(e) if attempt == TRIES => {
                    return Err(self.failure(code, what, crate::repo::scrub_urls(&e.to_string())));
                }
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(self.failure(code, what, "no answer"))
    }

    /// The retention of the current version of the object at `path`, from a HEAD:
    /// `None` when the answer carries none (no lock, or credentials without
    /// `s3:GetObjectRetention`, for which S3 leaves the headers out).
    pub async fn retention(&self, path: &str) -> Result<Option<Retention>, Failure> {
        let what = format!("reading the retention of {path}");
        let (status, headers, body) = self
            .send(
                http::Method::HEAD,
                &self.object_url(path, ""),
                Vec::new(),
                &[],
                Code::DestinationUnreadable,
                &what,
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure(Code::DestinationUnreadable, &what, answer(status, &body)));
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mode = header("x-amz-object-lock-mode").and_then(LockMode::from_s3);
        let until = header("x-amz-object-lock-retain-until-date")
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(match (mode, until) {
            (Some(mode), Some(until)) => Some(Retention { mode, until }),
            _ => None,
        })
    }

    /// Sets the retention of the current version of the object at `path`
    /// (`PutObjectRetention`). S3 refuses to shorten a lock or to turn compliance
    /// into governance; backplan only lengthens.
    pub async fn put_retention(&self, path: &str, retention: Retention) -> Result<(), Failure> {
        let what = format!("extending the lock of {path}");
        // Whole seconds, rounded up: never a moment shorter than asked.
        let until = retention.until + chrono::Duration::milliseconds(999);
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            retention.mode.as_s3(),
            until.format("%Y-%m-%dT%H:%M:%SZ"),
        )
        .into_bytes();
        // S3 requires a checksum of the body with PutObjectRetention.
        let md5 = openssl::hash::hash(openssl::hash::MessageDigest::md5(), &body)
            .map_err(|e| self.failure(Code::LockExtensionFailed, &what, e))?;
        let headers = [
            ("content-type", "application/xml".to_string()),
            ("content-md5", openssl::base64::encode_block(&md5)),
        ];
        let (status, _, text) = self
            .send(
                http::Method::PUT,
                &self.object_url(path, "retention"),
                body,
                &headers,
                Code::LockExtensionFailed,
                &what,
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure(Code::LockExtensionFailed, &what, answer(status, &text)));
        }
        Ok(())
    }

    /// The bucket's default retention (`GetObjectLockConfiguration`): `None` when
    /// the bucket has Object Lock but no default rule.
    pub async fn bucket_default(&self) -> Result<Option<DefaultRetention>, Failure> {
        let what = "reading the bucket's Object Lock configuration";
        let (status, _, body) = self
            .send(
                http::Method::GET,
                &format!("{}?object-lock", self.bucket_url),
                Vec::new(),
                &[],
                Code::DestinationUnreadable,
                what,
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure(Code::DestinationUnreadable, what, answer(status, &body)));
        }
        Ok(parse_default_retention(&body))
    }

    /// The retention of each of `paths`, read [`CONCURRENCY`] at a time; each
    /// path's result.
    pub async fn retentions(
        self: &Arc<Self>,
        paths: Vec<String>,
    ) -> Vec<(String, Result<Option<Retention>, Failure>)> {
        futures::stream::iter(paths)
            .map(|path| {
                let api = self.clone();
                async move {
                    let r = api.retention(&path).await;
                    (path, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// Extends to `until` the lock of each of `paths` whose retention ends before
    /// it (less [`LOCK_SLACK`]), in the mode it has (`default_mode` when it has
    /// none): one HEAD per path and one PUT per path that needs it,
    /// [`CONCURRENCY`] at a time. Stops at the first failure.
    pub async fn extend(
        self: &Arc<Self>,
        paths: Vec<String>,
        until: DateTime<Utc>,
        default_mode: Option<LockMode>,
    ) -> LockExtension {
        let mut done = LockExtension {
            destination: self.destination.clone(),
            until,
            checked: 0,
            extended: 0,
            error: None,
        };
        let mut results = futures::stream::iter(paths)
            .map(|path| {
                let api = self.clone();
                async move {
                    let current = api.retention(&path).await?;
                    if current.is_some_and(|r| r.until + LOCK_SLACK >= until) {
                        return Ok(false);
                    }
                    let mode = current.map(|r| r.mode).or(default_mode).ok_or_else(|| {
                        api.failure(
                            Code::LockExtensionFailed,
                            &format!("extending the lock of {path}"),
                            "it has no retention to read the mode from (does the HEAD lack s3:GetObjectRetention?), and the bucket has no default retention",
                        )
                    })?;
                    api.put_retention(&path, Retention { mode, until }).await?;
                    Ok::<bool, Failure>(true)
                }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some(result) = results.next().await {
            match result {
                Ok(extended) => {
                    done.checked += 1;
                    done.extended += usize::from(extended);
                }
                Err(f) => {
                    let f = match f.code {
                        Code::LockExtensionFailed => f,
                        _ => Failure::new(Code::LockExtensionFailed, f.message),
                    };
                    done.error = Some(f);
                    break;
                }
            }
        }
        done
    }
}

/// An S3 error answer in short: the status and the error's code.
fn answer(status: http::StatusCode, body: &str) -> String {
    match xml_value(body, "Code") {
        Some(code) => format!("HTTP {} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The bucket's default retention in a `GetObjectLockConfiguration` answer
/// (`Days`, or `Years` counted as 365 days).
pub fn parse_default_retention(xml: &str) -> Option<DefaultRetention> {
    let rule = xml_value(xml, "DefaultRetention")?;
    let mode = LockMode::from_s3(xml_value(rule, "Mode")?)?;
    let number = |name: &str| match xml_value(rule, name) {
        Some(n) => n.trim().parse::<u32>().ok(),
        None => Some(0),
    };
    // S3 sends one of the two; some servers send both, the other 0.
    let days = number("Days")?.checked_add(number("Years")?.checked_mul(365)?)?;
    (days > 0).then_some(DefaultRetention { mode, days })
}

/// The text of the first element `<name>…</name>` (S3's answers are small, flat
/// documents with no attributes on these elements).
fn xml_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(&text[start..end])
}

/// A key or bucket name, URI-encoded as SigV4 wants it: every byte but the
/// unreserved ones and `/` percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_s_default_retention_is_read_in_days_or_years() {
        let days = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
            <Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>35</Days></DefaultRetention>\
            </Rule></ObjectLockConfiguration>";
        assert_eq!(
            parse_default_retention(days),
            Some(DefaultRetention {
                mode: LockMode::Compliance,
                days: 35
            })
        );
        let years = days
            .replace("<Days>35</Days>", "<Years>1</Years>")
            .replace("COMPLIANCE", "GOVERNANCE");
        assert_eq!(
            parse_default_retention(&years),
            Some(DefaultRetention {
                mode: LockMode::Governance,
                days: 365
            })
        );
        let none = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
            </ObjectLockConfiguration>";
        assert_eq!(parse_default_retention(none), None);
    }

    #[test]
    fn keys_are_percent_encoded_except_slashes_and_unreserved_bytes() {
        assert_eq!(
            encode("backups/repo/packs/ab/ab12"),
            "backups/repo/packs/ab/ab12"
        );
        assert_eq!(encode("a b+c"), "a%20b%2Bc");
    }
}
