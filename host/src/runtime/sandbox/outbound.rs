//! Outbound HTTP from a guest (wasi:http): only allowlisted hosts, only public addresses
//! unless private ones are granted, response bodies capped.

use std::future::Future;
use std::net::ToSocketAddrs;

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
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            // A response larger than the cap ends in an error instead of filling memory.
            let capped = response.map(|body| {
                http_body_util::Limited::new(body, body_cap)
                    .map_err(move |e| match e.downcast::<wasmtime_wasi_http::Error>() {
                        Ok(inner) => *inner,
                        Err(_) => {
                            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(body_cap as u64))
                        }
                    })
                    .boxed_unsync()
            });
            Ok((capped, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}
