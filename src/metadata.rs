//! RFC 9728 protected-resource metadata, served where every client looks for it.
//!
//! For a resource `https://host/public/mcp` the document is served at the path-inserted URL
//! `https://host/.well-known/oauth-protected-resource/public/mcp` (the `resource_metadata` of
//! the layer's challenges) and, for the canonical resource, at the root
//! `https://host/.well-known/oauth-protected-resource` too, since clients probe the
//! path-inserted URL first and then the root.
//!
//! `resource` is the configured resource string byte for byte, `authorization_servers[0]`
//! the issuer byte for byte; `scopes_supported` never lists `offline_access`. Responses are
//! `application/json` with `Access-Control-Allow-Origin: *` and answer CORS preflights, so
//! browser clients (the Inspector) can read them.
//!
//! ```
//! use mcp_oauth::{McpOAuthConfig, protected_resource_router};
//! use mcp_oauth::verify::ApiKeyVerifier;
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cfg = McpOAuthConfig::builder()
//!     .resource("https://mcp.example.com/mcp")
//!     .issuer("https://auth.example.com")
//!     .scope("read", "Read things")
//!     .verifier(ApiKeyVerifier::new())
//!     .build()
//!     .unwrap();
//! let app = protected_resource_router(&cfg);
//! let res = app
//!     .oneshot(http::Request::get("/.well-known/oauth-protected-resource/mcp").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 200);
//! let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
//! let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
//! assert_eq!(doc["authorization_servers"][0], "https://auth.example.com");
//! # }
//! ```

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::config::McpOAuthConfig;

/// The RFC 9728 document for resource number `idx`.
#[must_use]
pub(crate) fn document(cfg: &McpOAuthConfig, idx: usize) -> serde_json::Value {
    let inner = &cfg.inner;
    let mut doc = json!({
        "resource": inner.resources[idx],
        "authorization_servers": [inner.issuer],
        "scopes_supported": inner.scopes.iter().map(|(s, _)| s.as_str()).filter(|s| *s != "offline_access").collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
    });
    if let Some(name) = &inner.resource_name {
        doc["resource_name"] = json!(name);
    }
    if let Some(url) = &inner.resource_documentation {
        doc["resource_documentation"] = json!(url);
    }
    doc
}

/// The protected-resource metadata as JSON, for the canonical resource.
#[must_use]
pub fn protected_resource_metadata(cfg: &McpOAuthConfig) -> serde_json::Value {
    document(cfg, 0)
}

fn json_response(body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// The crate's one CORS policy, for public, credential-free endpoints that browser clients
/// (the Inspector, web SDK clients) call cross-origin: any origin, any request header, every
/// response header exposed, no credentials, preflights cached a day. `methods` are the
/// methods allowed besides `OPTIONS`: `GET` for the metadata documents, `GET` and `POST` for
/// the authorization server's machine endpoints. (The MCP endpoint's own CORS, granted only
/// to allowed origins, is the layer's.)
pub(crate) fn public_cors(methods: &[Method]) -> CorsLayer {
    let mut allowed = methods.to_vec();
    if !allowed.contains(&Method::OPTIONS) {
        allowed.push(Method::OPTIONS);
    }
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(allowed)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(std::time::Duration::from_secs(86_400))
}

/// A router serving the protected-resource metadata of every configured resource, at the
/// path-inserted URL of each and at the root for the canonical one. Merge it into the app
/// that serves the MCP endpoint (the authorization server's `oauth_router` includes it), or
/// let [`mount`](crate::mount)`(&cfg, mcp)` build the whole app. Resources that share a path
/// (told apart by host) are told apart here the same way: the request's `Host` picks the
/// document, and a host that names none of them (or headers that disagree on the host)
/// gets `404`.
pub fn protected_resource_router<S: Clone + Send + Sync + 'static>(
    cfg: &McpOAuthConfig,
) -> Router<S> {
    let mut router = Router::new();
    // Every path of `crate::paths::protected_resource_paths` (the list the layer lets
    // through): the path-inserted path of each resource, and the root for the resources with
    // no path or else the canonical one.
    let resources = &cfg.inner.resources;
    for path in crate::paths::protected_resource_paths(resources) {
        let mut owners: Vec<usize> = (0..resources.len())
            .filter(|&i| crate::paths::protected_resource_path(&resources[i]) == path)
            .collect();
        if owners.is_empty() {
            owners.push(0);
        }
        let docs: Vec<(String, Bytes)> = owners
            .iter()
            .map(|&i| {
                let host = crate::resource::layer::authority_of(&resources[i]).to_owned();
                (host, Bytes::from(document(cfg, i).to_string()))
            })
            .collect();
        router = router.route(
            &path,
            get(move |req: http::Request<Body>| {
                let doc = pick(&docs, &req);
                async move {
                    match doc {
                        Some(b) => json_response(b),
                        None => not_found(),
                    }
                }
            }),
        );
    }
    router.layer(public_cors(&[Method::GET]))
}

/// The document for the request: the only one, or the one whose resource's host the
/// request names.
fn pick(docs: &[(String, Bytes)], req: &http::Request<Body>) -> Option<Bytes> {
    if let [(_, only)] = docs {
        return Some(only.clone());
    }
    let host = crate::resource::layer::request_host(
        req.headers(),
        req.uri().authority().map(http::uri::Authority::as_str),
    )?;
    docs.iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(host))
        .map(|(_, b)| b.clone())
}

fn not_found() -> Response<Body> {
    let mut res = Response::new(Body::from(
        json!({"error": "not_found", "error_description": "no protected resource of this server is on this host"})
            .to_string(),
    ));
    *res.status_mut() = http::StatusCode::NOT_FOUND;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::verify::ApiKeyVerifier;

    #[tokio::test]
    async fn resources_sharing_a_path_get_their_own_document_by_host() {
        let cfg = McpOAuthConfig::builder()
            .resource("https://a.example.com/mcp")
            .resource("https://b.example.com/mcp")
            .issuer("https://auth.example.com")
            .verifier(ApiKeyVerifier::new())
            .build()
            .unwrap();
        let app: Router = protected_resource_router(&cfg);
        let fetch = |host: Option<&'static str>, forwarded: Option<&'static str>| {
            let mut req = Request::get("/.well-known/oauth-protected-resource/mcp");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            if let Some(f) = forwarded {
                req = req.header("x-forwarded-host", f);
            }
            app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        for (host, resource) in [
            ("a.example.com", "https://a.example.com/mcp"),
            ("B.example.com", "https://b.example.com/mcp"),
        ] {
            let res = fetch(Some(host), None).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["resource"], resource, "{host}");
        }
        // A host of neither, no host, or hosts that disagree: no document.
        for (host, fwd) in [
            (Some("c.example.com"), None),
            (None, None),
            (Some("a.example.com"), Some("b.example.com")),
        ] {
            let res = fetch(host, fwd).await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{host:?} {fwd:?}");
        }
    }

    #[tokio::test]
    async fn metadata_preflight_is_public_get_only_without_credentials() {
        let cfg = McpOAuthConfig::builder()
            .resource("https://mcp.example.com/mcp")
            .issuer("https://auth.example.com")
            .verifier(ApiKeyVerifier::new())
            .build()
            .unwrap();
        let app: Router = protected_resource_router(&cfg);
        let res = app
            .oneshot(
                Request::builder()
                    .method(Method::OPTIONS)
                    .uri("/.well-known/oauth-protected-resource/mcp")
                    .header("origin", "https://evil.example")
                    .header("access-control-request-method", "GET")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("GET"), "{methods}");
        assert!(!methods.contains("POST"), "{methods}");
        assert!(h.get("access-control-allow-credentials").is_none());
        assert_eq!(h["access-control-max-age"], "86400");
    }
}
