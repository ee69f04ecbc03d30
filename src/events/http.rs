//! The event sinks' HTTP client: POSTs over HTTP/1.1 to one endpoint, on one keep-alive
//! connection (plain, or TLS trusting Mozilla's roots), each exchange bounded by a timeout.
//!
//! hyper's client connection, on the tokio-rustls and webpki-roots the relay already uses
//! for its upstream: no second TLS stack, no connection pool to bound (each endpoint has
//! one worker, which sends one record at a time).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// At most this much of an answer's body is read (and thrown away), so that the
/// connection can be used again; a longer body closes it instead.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// Why a POST did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not an http:// or https:// URL with a host")]
    Url,
    #[error("the request cannot be built: {0}")]
    Request(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
}

impl HttpError {
    /// False when sending the same request again cannot help (the URL or the request
    /// itself is wrong).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, HttpError::Url | HttpError::Request(_))
    }
}

/// Where requests go, read once from the URL.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    host: url::Host<String>,
    port: u16,
    /// The `Host` header: the host as the URL writes it, and its port when it gave one.
    authority: String,
    /// The path and query.
    target: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let parsed = url::Url::parse(url).map_err(|_| HttpError::Url)?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(HttpError::Url),
        };
        let host = parsed.host().ok_or(HttpError::Url)?.to_owned();
        let port = parsed.port_or_known_default().ok_or(HttpError::Url)?;
        let host_text = parsed.host_str().ok_or(HttpError::Url)?;
        let authority = match parsed.port() {
            Some(port) => format!("{host_text}:{port}"),
            None => host_text.to_owned(),
        };
        let target = parsed[url::Position::BeforePath..url::Position::AfterQuery].to_owned();
        Ok(Endpoint {
            https,
            host,
            port,
            authority,
            target,
        })
    }
}

/// POSTs to one URL, keeping its connection between requests.
pub struct HttpSender {
    endpoint: Result<Endpoint, ()>,
    timeout: Duration,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl HttpSender {
    /// A sender for `url`; each exchange (connect, TLS, request, answer) must end within
    /// `timeout`.
    pub fn new(url: &str, timeout: Duration) -> HttpSender {
        HttpSender {
            endpoint: Endpoint::parse(url).map_err(|_| ()),
            timeout,
            connection: None,
        }
    }

    /// POSTs `body` with `headers`; `Ok` when the answer is 2xx.
    pub async fn post(
        &mut self,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<(), HttpError> {
        let Ok(endpoint) = &self.endpoint else {
            return Err(HttpError::Url);
        };
        let exchange = exchange(&mut self.connection, endpoint, headers, body);
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        };
        if result.is_err() {
            // A connection that failed, or answered other than 2xx, is not trusted again.
            self.connection = None;
        }
        result
    }
}

async fn exchange(
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    endpoint: &Endpoint,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<(), HttpError> {
    let mut request = hyper::Request::post(endpoint.target.as_str())
        .header(hyper::header::HOST, endpoint.authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| HttpError::Request(e.to_string()))?;
    let reusable = match connection.as_mut() {
        Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *connection = None;
    }
    let sender = match connection {
        Some(sender) => sender,
        None => connection.insert(connect(endpoint).await?),
    };
    let answer = sender.send_request(request).await?;
    let status = answer.status();
    if Limited::new(answer.into_body(), ANSWER_BODY_LIMIT)
        .collect()
        .await
        .is_err()
    {
        *connection = None;
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(HttpError::Status(status.as_u16()))
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, HttpError> {
    let tcp = match &endpoint.host {
        url::Host::Domain(name) => TcpStream::connect((name.as_str(), endpoint.port)).await,
        url::Host::Ipv4(ip) => TcpStream::connect((*ip, endpoint.port)).await,
        url::Host::Ipv6(ip) => TcpStream::connect((*ip, endpoint.port)).await,
    }
    .map_err(HttpError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if endpoint.https {
        let name = match &endpoint.host {
            url::Host::Domain(name) => {
                ServerName::try_from(name.clone()).map_err(|e| HttpError::Tls(e.to_string()))?
            }
            url::Host::Ipv4(ip) => ServerName::from(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => ServerName::from(IpAddr::V6(*ip)),
        };
        let connector = TlsConnector::from(tls_config()?);
        Box::new(
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Tls(e.to_string()))?,
        )
    } else {
        Box::new(tcp)
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection runs until the sender is dropped or the peer closes it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The TLS client configuration: Mozilla's roots, ring, TLS 1.2 and 1.3.
fn tls_config() -> Result<Arc<ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(HttpError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/ses?x=1").unwrap();
        assert!(!e.https);
        assert_eq!(
            (e.port, e.authority.as_str(), e.target.as_str()),
            (8080, "127.0.0.1:8080", "/ses?x=1")
        );
        let e = Endpoint::parse("https://hooks.example.com").unwrap();
        assert!(e.https);
        assert_eq!(
            (e.port, e.authority.as_str(), e.target.as_str()),
            (443, "hooks.example.com", "/")
        );
        let e = Endpoint::parse("http://[::1]:9/").unwrap();
        assert_eq!(e.authority, "[::1]:9");
        for bad in ["ftp://x/", "not a url", "http://", "file:///tmp/x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_to_retry() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut sender = HttpSender::new(&format!("http://{addr}/"), Duration::from_secs(5));
        let e = sender
            .post(&[], Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e}");
        assert!(e.is_retryable());
        let mut bad = HttpSender::new("gopher://x/", Duration::from_secs(5));
        assert!(
            !bad.post(&[], Bytes::new())
                .await
                .unwrap_err()
                .is_retryable()
        );
    }
}
