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
            let mut request = request;
            if let Some(checked) = addresses.first() {
                pin_address(&mut request, *checked);
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

/// Send a plain-HTTP request to `checked`, the address whose check it passed: left to
/// itself, the connection would resolve the name again, and a name rebound in between
/// could land on an address that was never checked. The `Host` header keeps the name. An
/// https request keeps its name, because TLS verifies the server against it: a rebound name
/// reaches no server that holds a certificate for it.
fn pin_address<B>(request: &mut http::Request<B>, checked: std::net::SocketAddr) {
    if request.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
        return;
    }
    let mut parts = request.uri().clone().into_parts();
    parts.authority = checked.to_string().parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::pin_address;

    #[test]
    fn plain_http_goes_to_the_checked_address_and_https_keeps_its_name() {
        let checked = "93.184.215.14:80".parse().unwrap();
        let mut plain = http::Request::get("http://example.com/a?b=1").body(()).unwrap();
        pin_address(&mut plain, checked);
        assert_eq!(plain.uri().to_string(), "http://93.184.215.14:80/a?b=1");
        let mut tls = http::Request::get("https://example.com/a").body(()).unwrap();
        pin_address(&mut tls, "93.184.215.14:443".parse().unwrap());
        assert_eq!(tls.uri().to_string(), "https://example.com/a");
        let mut v6 = http::Request::get("http://example.com/").body(()).unwrap();
        pin_address(&mut v6, "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:80".parse().unwrap());
        assert_eq!(
            v6.uri().authority().unwrap().as_str(),
            "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:80"
        );
    }
}
