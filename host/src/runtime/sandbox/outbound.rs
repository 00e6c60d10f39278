//! Outbound HTTP from a guest (wasi:http): only allowlisted hosts, only public addresses
//! unless private ones are granted, response bodies capped.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use wasmtime_wasi_http::WasiHttpHooks;

use super::denials::Denials;
use crate::policy::HostAllowlist;

/// The wasi:http send hook: only allowlisted hosts, only public addresses unless
/// private ones are granted. Denials are recorded so the call reports
/// `permission_denied` even when the guest turns them into its own error.
pub(super) struct Outbound {
    pub(super) allow: HostAllowlist,
    pub(super) body_cap: usize,
    pub(super) denied: Denials,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let allow = self.allow.clone();
        let denied = self.denied.clone();
        let body_cap = self.body_cap;
        Box::new(async move {
            let deny = |reason: String| {
                denied.record(reason);
                Err(wasmtime_wasi_http::Error::HttpRequestDenied)
            };
            let authority =
                request.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
            if !allow.allows_authority(&authority) {
                return deny(format!(
                    "HTTP request to `{authority}` refused: it is not in this plugin's allow_hosts"
                ));
            }
            let port = request.uri().port_u16().unwrap_or(
                if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 },
            );
            let host =
                request.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_string();
            let addresses = tokio::task::spawn_blocking(move || {
                (host.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>())
            })
            .await
            .map_err(|_| wasmtime_wasi_http::Error::DnsTimeout)?
            .map_err(|_| wasmtime_wasi_http::Error::DestinationNotFound)?;
            if let Some(blocked) = addresses.iter().find(|a| !allow.allows_address(a.ip())) {
                return deny(format!(
                    "HTTP request to `{authority}` refused: it resolves to the non-public address \
                     {}; set allow_private_addresses = true for this plugin to permit it",
                    blocked.ip()
                ));
            }
            let Some(&checked) = addresses.first() else {
                return Err(wasmtime_wasi_http::Error::DestinationNotFound);
            };
            use http_body_util::BodyExt;
            let response = send_to(request, options, checked).await?;
            // A response larger than the cap ends in an error instead of filling memory.
            let capped = response.map(|body| {
                let body = body.map_err(wasmtime_wasi_http::Error::from);
                http_body_util::Limited::new(body, body_cap)
                    .map_err(move |e| match e.downcast::<wasmtime_wasi_http::Error>() {
                        Ok(inner) => *inner,
                        Err(_) => {
                            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(body_cap as u64))
                        }
                    })
                    .boxed_unsync()
            });
            // The client's own task drives the connection; nothing is left to await.
            let io = async { Ok(()) };
            Ok((capped, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Send `request` to `checked`, the address whose check it passed. Left to itself, the
/// connection would look the name up again, and a name rebound in between could land on
/// an address that was never checked. The request keeps its name for the `Host` header
/// and for TLS, which still verifies the server's certificate against it.
async fn send_to(
    request: http::Request<wasmtime_wasi_http::WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    checked: SocketAddr,
) -> wasmtime_wasi_http::Result<http::Response<hyper::body::Incoming>> {
    use wasmtime_wasi_http::Error;
    // wasmtime-wasi-http's defaults when the guest sets no timeout; the call's
    // deadline bounds every wait anyway.
    let patience = Duration::from_secs(600);
    let connect = options.and_then(|o| o.connect_timeout).unwrap_or(patience);
    let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(patience);
    let mut tcp = HttpConnector::new_with_resolver(Pinned(checked));
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(connect));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    // No pool: a connection is one call's, and never outlives it for the next.
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(tls);
    let sent = tokio::time::timeout(first_byte, client.request(request)).await;
    sent.map_err(|_| Error::ConnectionReadTimeout)?.map_err(|e| {
        use std::error::Error as _;
        match e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
            _ if e.is_connect() => Error::Connect(std::io::Error::other(e.to_string())),
            Some(io) => Error::Connect(std::io::Error::new(io.kind(), io.to_string())),
            None => Error::InternalError(Some(e.to_string())),
        }
    })
}

/// A resolver that knows one answer: the address that was checked.
#[derive(Clone)]
struct Pinned(SocketAddr);

impl tower_service::Service<Name> for Pinned {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<std::io::Result<Self::Response>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(std::iter::once(self.0)))
    }
}
