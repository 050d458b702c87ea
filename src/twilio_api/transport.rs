//! HTTP/1.1 to Twilio's two hosts: hyper's pooled client over rustls, one
//! `Authorization` header made once.
//!
//! Not reqwest, which webhooks and e-mail still use: its layers (the URL
//! parse, the header map built per request, the basic auth encoded per
//! request, the redirect and proxy machinery, its own body type) cost ~17 µs
//! of CPU per create-call on loopback, a tenth of what a reservation costs the
//! server (see docs/bench-history.md). The client under it is this one.
//!
//! What reqwest did and this does too: certificates checked against
//! Mozilla's or the system's roots; `TCP_NODELAY`, TCP keepalive (15 s, then
//! every 15 s, 3 probes) and `TCP_USER_TIMEOUT` (30 s), so that a connection a
//! firewall dropped while it idled in the pool is found dead rather than
//! written into; 5 s to connect, the proxy's CONNECT and the TLS handshake
//! included ([`Bounded`]); kept-alive connections (up to 64 idle per host,
//! closed after 90 s idle); a request sent again by hyper only when its
//! connection closed before it was written; and the proxy named by
//! `HTTPS_PROXY` (or `ALL_PROXY`, `HTTP_PROXY` for an `http://` base URL;
//! `NO_PROXY` exempts hosts), reached through a CONNECT tunnel (see
//! [`Route`]). What it does not: follow redirects (Twilio's API sends none),
//! or reach a proxy over TLS or SOCKS.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::util::{Either, MapErr};
use tower::{Service, ServiceExt as _};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Straight to the host, or through a proxy's CONNECT tunnel.
type Connector = Either<
    MapErr<HttpConnector, fn(<HttpConnector as Service<http::Uri>>::Error) -> BoxError>,
    MapErr<Tunnel<HttpConnector>, fn(<Tunnel<HttpConnector> as Service<http::Uri>>::Error) -> BoxError>,
>;

const AGENT: &str = concat!("call-router/", env!("CARGO_PKG_VERSION"));

/// How long a new connection may take: TCP, the proxy's CONNECT and TLS.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connector with one deadline over all of a new connection's set-up,
/// which hyper may also run in the background, where no request's timeout
/// bounds it. An `http://` destination gets its port written out (80), so
/// that a proxy's tunnel goes to it rather than to 443.
#[derive(Clone)]
struct Bounded {
    inner: HttpsConnector<Connector>,
    within: Duration,
}

/// A connection not set up within [`CONNECT_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("no connection within {} ms (TCP, a proxy's CONNECT and TLS)", .0.as_millis())]
struct ConnectTimedOut(Duration);

type Connecting =
    Pin<Box<dyn Future<Output = Result<<HttpsConnector<Connector> as Service<http::Uri>>::Response, BoxError>> + Send>>;

impl Service<http::Uri> for Bounded {
    type Response = <HttpsConnector<Connector> as Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: http::Uri) -> Connecting {
        let dst = with_port(dst);
        let connecting = self.inner.call(dst);
        let within = self.within;
        Box::pin(async move {
            match tokio::time::timeout(within, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(ConnectTimedOut(within)) as BoxError),
            }
        })
    }
}

/// `dst` with its port written out when it is an `http://` URI without one.
fn with_port(dst: http::Uri) -> http::Uri {
    if dst.scheme_str() != Some("http") || dst.port().is_some() {
        return dst;
    }
    let Some(host) = dst.host() else { return dst };
    let authority = format!("{host}:80");
    let mut parts = dst.clone().into_parts();
    match authority.parse() {
        Ok(a) => {
            parts.authority = Some(a);
            http::Uri::from_parts(parts).unwrap_or(dst)
        }
        Err(_) => dst,
    }
}

/// Why a request got no answer, or no whole one.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("not a valid request: {0}")]
    Request(http::Error),
    /// Connecting, the TLS handshake, or writing the request failed, or the
    /// connection closed before an answer's head came.
    #[error("{}", crate::telemetry::chain(.0))]
    Send(hyper_util::client::legacy::Error),
    #[error("reading the answer: {}", crate::telemetry::chain(.0))]
    Read(hyper::Error),
}

impl TransportError {
    /// Whether the server's certificate was refused (an unknown CA, another
    /// host's name, expired): sending again cannot change that.
    pub fn is_certificate(&self) -> bool {
        let TransportError::Send(e) = self else { return false };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
                return true;
            }
            // An io::Error shows the error it carries, and its `source` skips it.
            let carried = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
            next = match carried {
                Some(c) => Some(c as &(dyn std::error::Error + 'static)),
                None => err.source(),
            };
        }
        false
    }
}

/// The pooled client, with the account's credentials; cheap to clone.
#[derive(Clone)]
pub(super) struct Transport {
    client: Client<Bounded, Full<Bytes>>,
    /// `Basic base64(account:token)`, marked sensitive.
    authorization: HeaderValue,
}

impl Transport {
    /// A client over `tls` by `route`, whose new connections must be set up
    /// within `connect_within` ([`CONNECT_TIMEOUT`] but in tests).
    pub(super) fn new(
        tls: rustls::ClientConfig,
        route: Route,
        connect_within: Duration,
        account: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        use base64::Engine as _;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let connector: Connector = match route {
            Route::Direct => Either::Left(tcp.map_err(|e| Box::new(e) as BoxError)),
            Route::Proxy { uri, auth } => {
                let tunnel = match auth {
                    Some(auth) => Tunnel::new(uri, tcp).with_auth(auth),
                    None => Tunnel::new(uri, tcp),
                };
                Either::Right(tunnel.map_err(|e| Box::new(e) as BoxError))
            }
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(Bounded { inner: https, within: connect_within });
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{account}:{token}"));
        let mut authorization =
            HeaderValue::try_from(format!("Basic {encoded}")).context("the credentials make no valid header")?;
        authorization.set_sensitive(true);
        Ok(Self { client, authorization })
    }

    /// Sends one request and returns the answer's head; the body streams
    /// after. `form` is sent as `application/x-www-form-urlencoded`. No
    /// timeout here: the caller bounds the whole exchange.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<Bytes>,
        accept_json: bool,
    ) -> Result<Response<Incoming>, TransportError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(USER_AGENT, HeaderValue::from_static(AGENT));
        let accept = if accept_json { "application/json" } else { "*/*" };
        req = req.header(ACCEPT, HeaderValue::from_static(accept));
        let body = match form {
            Some(form) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
                Full::new(form)
            }
            None => Full::default(),
        };
        let req = req.body(body).map_err(TransportError::Request)?;
        self.client.request(req).await.map_err(TransportError::Send)
    }
}

/// How the API's connections reach Twilio's hosts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Route {
    Direct,
    /// Through an HTTP proxy's CONNECT tunnel, with its `Proxy-Authorization`.
    Proxy {
        uri: http::Uri,
        auth: Option<HeaderValue>,
    },
}

impl Route {
    /// The route to both base URLs under `proxies` (from the environment:
    /// [`Matcher::from_env`]). Both hosts go the same way, or the start fails
    /// and says why, since one client serves both.
    pub(super) fn for_bases(proxies: &Matcher, bases: [&str; 2]) -> anyhow::Result<Route> {
        let route = |base: &str| -> anyhow::Result<Route> {
            let uri: http::Uri = base.parse().with_context(|| format!("{base:?} is not a valid URL"))?;
            let Some(proxy) = proxies.intercept(&uri) else { return Ok(Route::Direct) };
            let target = proxy.uri().clone();
            if target.scheme_str() != Some("http") {
                anyhow::bail!(
                    "the proxy for {base} ({}) is not an http:// proxy; requests to Twilio's API reach a proxy \
                     over plain HTTP with CONNECT only (set NO_PROXY to skip it)",
                    without_credentials(&target)
                );
            }
            Ok(Route::Proxy { uri: target, auth: proxy.basic_auth().cloned() })
        };
        let (core, taskrouter) = (route(bases[0])?, route(bases[1])?);
        if core != taskrouter {
            anyhow::bail!(
                "the proxy settings (HTTPS_PROXY, NO_PROXY) send {} and {} different ways; \
                 requests to Twilio's API take one route for both",
                bases[0],
                bases[1]
            );
        }
        Ok(core)
    }
}

/// A proxy's URI as it may be logged: its user and password left out.
pub(super) fn without_credentials(uri: &http::Uri) -> String {
    match uri.authority() {
        Some(a) => {
            let host = a.as_str().rsplit('@').next().unwrap_or_default();
            format!("{}://{host}", uri.scheme_str().unwrap_or("http"))
        }
        None => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORE: &str = "https://api.twilio.com";
    const TASKROUTER: &str = "https://taskrouter.twilio.com";

    #[test]
    fn without_proxy_variables_both_hosts_are_reached_directly() {
        let none = Matcher::builder().build();
        assert_eq!(Route::for_bases(&none, [CORE, TASKROUTER]).unwrap(), Route::Direct);
    }

    #[test]
    fn https_proxy_sends_both_hosts_through_its_tunnel_with_its_credentials() {
        let proxies = Matcher::builder().https("http://ops:s3cret@10.0.0.1:3128").build();
        let Route::Proxy { uri, auth } = Route::for_bases(&proxies, [CORE, TASKROUTER]).unwrap() else {
            panic!("a proxy route")
        };
        assert_eq!(without_credentials(&uri), "http://10.0.0.1:3128");
        assert_eq!(auth.unwrap(), "Basic b3BzOnMzY3JldA==");
        // HTTP_PROXY is for http:// URLs only.
        let http_only = Matcher::builder().http("http://10.0.0.1:3128").build();
        assert_eq!(Route::for_bases(&http_only, [CORE, TASKROUTER]).unwrap(), Route::Direct);
    }

    #[test]
    fn no_proxy_exempts_the_hosts_it_names() {
        let proxies = Matcher::builder().https("http://10.0.0.1:3128").no("twilio.com").build();
        assert_eq!(Route::for_bases(&proxies, [CORE, TASKROUTER]).unwrap(), Route::Direct);
    }

    #[test]
    fn proxy_settings_that_split_the_two_hosts_are_refused_with_the_reason() {
        let proxies = Matcher::builder().https("http://10.0.0.1:3128").no("api.twilio.com").build();
        let err = Route::for_bases(&proxies, [CORE, TASKROUTER]).unwrap_err().to_string();
        assert!(err.contains("different ways"), "{err}");
    }

    #[test]
    fn a_tls_or_socks_proxy_is_refused_with_the_reason() {
        for proxy in ["https://10.0.0.1:3128", "socks5://10.0.0.1:1080"] {
            let proxies = Matcher::builder().https(proxy).build();
            let err = Route::for_bases(&proxies, [CORE, TASKROUTER]).unwrap_err().to_string();
            assert!(err.contains("not an http:// proxy"), "{err}");
        }
    }

    /// A tunnel goes to the port the base URL means, 80 for `http://`
    /// (hyper's tunnel would take 443).
    #[test]
    fn an_http_destination_gets_its_port_written_out() {
        let port = |uri: &str| with_port(uri.parse().unwrap()).to_string();
        assert_eq!(port("http://sandbox.example/"), "http://sandbox.example:80/");
        assert_eq!(port("http://sandbox.example:8080/"), "http://sandbox.example:8080/");
        assert_eq!(port("https://api.twilio.com/"), "https://api.twilio.com/");
    }

    /// A proxy whose URI cannot be shown without its password keeps it out.
    #[test]
    fn a_proxys_uri_is_shown_without_its_user_and_password() {
        let uri: http::Uri = "http://ops:s3cret@proxy.example:3128".parse().unwrap();
        assert_eq!(without_credentials(&uri), "http://proxy.example:3128");
    }
}
