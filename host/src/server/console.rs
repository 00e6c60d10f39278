//! The web console at `/` and `/ui/...`, and `GET /v1/plugins`, the list it shows.
//!
//! The page's files are compiled into the binary and hold no data: they are public, and
//! every call the page makes goes through the same gate as any other client's. The
//! Content-Security-Policy keeps the page to this origin: no script, style, image or
//! connection anywhere else, and no framing.

use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::access::Admitted;
use super::respond::{Body, full, json_response};
use super::state::AppState;

/// What the browser may load: this origin only, never inside another page.
const POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's files: (path under `/ui/`, content type, content).
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../console/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../console/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../console/api.js")),
    ("form.js", "text/javascript; charset=utf-8", include_str!("../../console/form.js")),
    ("metrics.js", "text/javascript; charset=utf-8", include_str!("../../console/metrics.js")),
    ("icon.svg", "image/svg+xml", include_str!("../../console/icon.svg")),
];

/// The console file at `path` (`/` is the page itself), or None when there is none.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let name = match path {
        "/" | "/ui" | "/ui/" => "index.html",
        other => other.strip_prefix("/ui/")?,
    };
    let (_, content_type, content) = FILES.iter().find(|(file, ..)| *file == name)?;
    Some(
        Response::builder()
            .header(header::CONTENT_TYPE, *content_type)
            .header(header::CONTENT_SECURITY_POLICY, POLICY)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "no-referrer")
            // Files change only with the binary; revalidating is cheap on loopback.
            .header(header::CACHE_CONTROL, "no-cache")
            .body(full(*content))
            .expect("static headers are valid"),
    )
}

/// The plugins the caller may see: those with a tool it may call, and components that
/// failed to load (for keys allowed the whole plugin), each with why; `generation` grows
/// with every change of the set of tools.
pub fn plugins(state: &AppState, admitted: &Admitted) -> Response<Body> {
    let allowlist = &admitted.client.allowlist;
    let live = state.invoker.plugins();
    let registry = live.registry();
    let loaded: Vec<Value> = (registry.plugins())
        .filter_map(|plugin| {
            let tools: Vec<String> = (plugin.tools.iter())
                .map(|t| format!("{}.{}", plugin.name, t.spec.name))
                .filter(|id| allowlist.permits(id))
                .collect();
            (!tools.is_empty()).then(|| {
                json!({
                    "name": plugin.name,
                    "file": file_name(&plugin.path),
                    "bytes": plugin.size,
                    "contract": plugin.contract,
                    "imports": plugin.imports,
                    "refused": plugin.refused,
                    "tools": tools,
                })
            })
        })
        .collect();
    let failed: Vec<Value> = (live.failures().into_iter())
        .filter(|error| allowlist.permits(&format!("{}.*", error.plugin)))
        .map(|error| {
            json!({
                "name": error.plugin,
                "file": file_name(&error.path),
                "kind": error.kind,
                "reason": error.reason,
                "serving_previous": registry.plugins().any(|p| p.name == error.plugin),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": loaded,
            "failed": failed,
            "loading": !live.is_ready(),
            "generation": *live.changes().borrow(),
        }),
    )
}

/// The file name alone: the operator's directory layout is not the caller's business.
fn file_name(path: &std::path::Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_file_is_served_with_the_policy_and_nothing_else_is() {
        for path in ["/", "/ui/", "/ui/app.js", "/ui/style.css"] {
            let response = asset(path).unwrap_or_else(|| panic!("{path} is served"));
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], POLICY);
        }
        for path in ["/ui/../Cargo.toml", "/ui/missing.js", "/index.html", "/uix"] {
            assert!(asset(path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_page_refers_only_to_files_it_is_served_with() {
        let page = FILES.iter().map(|(_, _, text)| *text).collect::<String>();
        for (start, _) in page.match_indices("/ui/") {
            let rest = &page[start + 4..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap();
            let name = &rest[..end];
            assert!(FILES.iter().any(|(file, ..)| *file == name), "/ui/{name} is not embedded");
        }
        // The SVG namespace is a name, not a place the page loads from.
        let page = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!page.contains("http://") && !page.contains("https://"), "no other origin");
    }
}
