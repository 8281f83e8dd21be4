//! A streamable-HTTP MCP upstream: requests forwarded, responses streamed back untouched.

use std::sync::Arc;

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The upstream MCP endpoint.
    pub url: url::Url,
}

/// The forwarding service.
#[derive(Debug)]
pub struct HttpUpstream {
    options: UpstreamOptions,
}

impl HttpUpstream {
    /// A forwarder to `options.url`.
    pub fn new(options: UpstreamOptions) -> Result<Arc<Self>, reqwest::Error> {
        Ok(Arc::new(Self { options }))
    }

    /// The upstream URL.
    pub fn url(&self) -> &url::Url {
        &self.options.url
    }

    /// The MCP endpoint (any path: mounted at the resource's path, behind the OAuth layer).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(|| async { (http::StatusCode::NOT_IMPLEMENTED, "upstream: not yet") })
    }
}
