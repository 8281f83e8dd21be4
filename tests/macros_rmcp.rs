//! `#[requires_scopes]`, `#[public_tool]` and `#[scoped_tools]` on a real rmcp server, served
//! by rmcp's `StreamableHttpService` behind `McpOAuthLayer` on loopback and driven over HTTP:
//!
//! - `tool_requirements()` is exactly what the attributes declare;
//! - fed to the policy, it makes the layer answer `401`/`403` challenges before rmcp runs;
//! - with a policy that lacks the tool map, the check `#[requires_scopes]` put inside the
//!   tool still refuses (a JSON-RPC error inside a `200`, naming the missing scope) and still
//!   honours the scope hierarchy.
#![cfg(all(feature = "rmcp", feature = "macros"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, ToolAccess, ToolRequirement};
use mcp_oauth::{Auth, McpOAuthConfig, McpOAuthLayer, public_tool, requires_scopes, scoped_tools};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, schemars, tool, tool_router};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// Arguments of `files_read`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct ReadArgs {
    /// The file to read.
    path: String,
}

#[derive(Debug, Clone)]
struct Srv;

#[scoped_tools]
#[tool_router(server_handler)]
impl Srv {
    /// Needs `files:read`; takes parameters too, next to the added `Extension<Parts>`.
    #[requires_scopes("files:read")]
    #[tool(description = "Read a file")]
    async fn files_read(
        &self,
        Parameters(ReadArgs { path }): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "contents of {path}"
        ))]))
    }

    /// Named explicitly; needs two scopes.
    #[requires_scopes("files:read", "files:write")]
    #[tool(name = "write_file", description = "Write a file")]
    async fn files_write(&self, auth: Auth) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "written by {}",
            auth.subject()
        ))]))
    }

    /// Callable without a token.
    #[public_tool]
    #[tool(description = "Search public documents")]
    async fn public_search(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "public results",
        )]))
    }

    /// Neither attribute: needs a token with the policy's base scopes; not listed.
    #[tool(description = "Who am I")]
    async fn whoami(&self, auth: Auth) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(
            auth.subject().to_owned(),
        )]))
    }
}

#[test]
fn tool_requirements_match_the_attributes() {
    assert_eq!(
        Srv::tool_requirements(),
        [
            ToolRequirement {
                name: "files_read",
                access: ToolAccess::Scopes(&["files:read"]),
            },
            ToolRequirement {
                name: "write_file",
                access: ToolAccess::Scopes(&["files:read", "files:write"]),
            },
            ToolRequirement {
                name: "public_search",
                access: ToolAccess::Public,
            },
        ]
    );
    assert_eq!(Srv::files_read_required_scopes(), ["files:read"]);
    assert_eq!(
        Srv::files_write_required_scopes(),
        ["files:read", "files:write"]
    );

    let policy = AccessPolicy::new().lazy().tools(Srv::tool_requirements());
    assert!(policy.is_public_tool("public_search"));
    assert_eq!(
        policy
            .scopes_for_tool("write_file")
            .map(ToString::to_string),
        Some("files:read files:write".to_owned())
    );
    assert_eq!(policy.scopes_for_tool("whoami"), None);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running server: rmcp behind the layer on `127.0.0.1:0`.
struct Server {
    ring: KeyRing,
    url: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(policy: AccessPolicy) -> Server {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let cfg = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .scope("admin", "Administer")
        .scope_implies("admin", ["files:write"])
        .scope_implies("files:write", ["files:read"])
        .key_ring(ring.clone())
        .policy(policy)
        .build()
        .unwrap();
    let mcp = StreamableHttpService::new(
        || Ok(Srv),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let app = axum::Router::new()
        .route_service("/mcp", mcp)
        .layer(McpOAuthLayer::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        ring,
        url: format!("http://{addr}/mcp"),
        http: reqwest::Client::new(),
        task,
    }
}

/// What one JSON-RPC POST got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

impl Server {
    fn token(&self, scope: &str) -> String {
        static JTI: AtomicUsize = AtomicUsize::new(0);
        self.ring
            .sign(
                "at+jwt",
                &json!({
                    "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1",
                    "scope": scope, "iat": now(), "exp": now() + 600,
                    "jti": format!("rmcp-{}", JTI.fetch_add(1, Ordering::Relaxed)),
                }),
            )
            .unwrap()
    }

    async fn rpc(&self, scope: Option<&str>, method: &str, params: Value) -> Reply {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
            );
        if let Some(scope) = scope {
            req = req.bearer_auth(self.token(scope));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let www_authenticate = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let sse = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
        let text = res.text().await.unwrap();
        let body = if sse {
            // The last `data:` line carrying a JSON-RPC response.
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .rfind(|v| v.get("result").is_some() || v.get("error").is_some())
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Reply {
            status,
            www_authenticate,
            body,
        }
    }

    async fn call(&self, scope: Option<&str>, tool: &str, args: Value) -> Reply {
        self.rpc(
            scope,
            "tools/call",
            json!({"name": tool, "arguments": args}),
        )
        .await
    }
}

/// The text of a successful tool result.
fn text(reply: &Reply) -> &str {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {reply:?}"))
}

/// The JSON-RPC error of a refused call inside a `200`.
fn rpc_error(reply: &Reply) -> &Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    let err = &reply.body["error"];
    assert!(err.is_object(), "not a JSON-RPC error: {reply:?}");
    err
}

fn read_args() -> Value {
    json!({"path": "notes.txt"})
}

#[tokio::test]
async fn the_layer_enforces_the_collected_map() {
    let srv = serve(AccessPolicy::new().lazy().tools(Srv::tool_requirements())).await;

    // Connecting and listing need no token.
    let init = srv
        .rpc(
            None,
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "macros-test", "version": "0"},
            }),
        )
        .await;
    assert_eq!(init.status, 200, "{init:?}");
    assert!(init.body["result"]["serverInfo"].is_object(), "{init:?}");
    let list = srv.rpc(None, "tools/list", json!({})).await;
    assert_eq!(list.status, 200, "{list:?}");
    let mut names: Vec<&str> = list.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["files_read", "public_search", "whoami", "write_file"]
    );

    // The public tool works without a token.
    assert_eq!(
        text(&srv.call(None, "public_search", json!({})).await),
        "public results"
    );

    // A scoped tool without a token: 401 naming the tool's scope.
    let r = srv.call(None, "files_read", read_args()).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(format!(r#"Bearer resource_metadata="{PRM}", scope="files:read""#).as_str())
    );

    // Lacking a scope: 403 insufficient_scope, before rmcp runs.
    let r = srv.call(Some("files:read"), "write_file", json!({})).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(
            format!(
                r#"Bearer resource_metadata="{PRM}", scope="files:read files:write", error="insufficient_scope", error_description="The access token lacks a scope this request needs""#
            )
            .as_str()
        )
    );

    // Holding it (or a broader one) gets through both lines of defence.
    assert_eq!(
        text(
            &srv.call(Some("files:read"), "files_read", read_args())
                .await
        ),
        "contents of notes.txt"
    );
    assert_eq!(
        text(&srv.call(Some("admin"), "write_file", json!({})).await),
        "written by alice"
    );
    // A tool with neither attribute needs just a token.
    assert_eq!(
        text(&srv.call(Some("files:read"), "whoami", json!({})).await),
        "alice"
    );
    let r = srv.call(None, "whoami", json!({})).await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn the_tool_refuses_when_the_layer_has_no_tool_map() {
    // Lazy, but the tools are not declared to the layer: it lets any token through.
    let srv = serve(AccessPolicy::new().lazy()).await;

    let r = srv.call(Some("files:read"), "write_file", json!({})).await;
    let err = rpc_error(&r);
    assert_eq!(err["code"], -32600, "{r:?}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("files:write"), "{msg}");
    assert!(!msg.contains("eyJ"), "no token material in errors: {msg}");
    assert_eq!(err["data"]["error"], "insufficient_scope");
    assert_eq!(err["data"]["required_scope"], "files:read files:write");
    assert_eq!(err["data"]["missing_scope"], "files:write");

    let r = srv.call(Some("other"), "files_read", read_args()).await;
    assert_eq!(rpc_error(&r)["data"]["missing_scope"], "files:read");

    // Granted, directly or through the hierarchy (admin ⊃ files:write ⊃ files:read).
    assert_eq!(
        text(
            &srv.call(Some("files:write"), "files_read", read_args())
                .await
        ),
        "contents of notes.txt"
    );
    assert_eq!(
        text(
            &srv.call(Some("files:read files:write"), "write_file", json!({}))
                .await
        ),
        "written by alice"
    );
    assert_eq!(
        text(&srv.call(Some("admin"), "write_file", json!({})).await),
        "written by alice"
    );
}

#[tokio::test]
async fn the_tool_refuses_an_anonymous_call_a_policy_wrongly_made_public() {
    // A hand-written policy that marks a scoped tool public: the layer lets the anonymous
    // call through, the tool's own check does not.
    let srv = serve(AccessPolicy::new().lazy().public_tool("files_read")).await;
    let r = srv.call(None, "files_read", read_args()).await;
    let err = rpc_error(&r);
    assert_eq!(err["code"], -32600, "{r:?}");
    assert_eq!(err["data"]["error"], "unauthenticated");
    assert!(
        err["message"].as_str().unwrap().contains("files:read"),
        "{r:?}"
    );
}

/// The `_meta.securitySchemes` of a tool definition, as rmcp builds it.
fn meta_schemes(tool: &rmcp::model::Tool) -> Option<Value> {
    tool.meta
        .as_ref()
        .and_then(|m| m.0.get("securitySchemes").cloned())
}

/// (a) A tool declared with `#[requires_scopes]`/`#[public_tool]` under `#[scoped_tools]`
/// carries its `securitySchemes` in its own definition, with no layer anywhere; a tool with
/// neither attribute carries none (the layer's fallback covers it).
#[test]
fn declared_tools_carry_their_schemes_in_their_definitions() {
    assert_eq!(
        meta_schemes(&Srv::files_read_tool_attr()),
        Some(json!([{"type": "oauth2", "scopes": ["files:read"]}]))
    );
    assert_eq!(
        meta_schemes(&Srv::files_write_tool_attr()),
        Some(json!([{"type": "oauth2", "scopes": ["files:read", "files:write"]}]))
    );
    assert_eq!(
        meta_schemes(&Srv::public_search_tool_attr()),
        Some(json!([{"type": "noauth"}]))
    );
    assert_eq!(Srv::whoami_tool_attr().meta, None);
    // What rmcp's own `tools/list` serialises, before any layer: the schemes are there.
    let listed = serde_json::to_value(Srv::tool_router().list_all()).unwrap();
    let read = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "files_read")
        .unwrap();
    assert_eq!(
        read["_meta"]["securitySchemes"],
        json!([{"type": "oauth2", "scopes": ["files:read"]}])
    );
}

/// A tool that has its own `_meta` keeps it; `#[scoped_tools]` adds the schemes next to it.
#[derive(Debug, Clone)]
struct WithMeta;

fn own_meta() -> rmcp::model::MetaObject {
    let mut m = serde_json::Map::new();
    m.insert("ui".to_owned(), json!({"resourceUri": "ui://widget"}));
    rmcp::model::MetaObject(m)
}

#[scoped_tools]
#[tool_router(server_handler)]
impl WithMeta {
    /// Has its own `_meta`.
    #[public_tool]
    #[tool(description = "Show a widget", meta = own_meta())]
    async fn widget(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![]))
    }
}

#[test]
fn an_existing_meta_is_kept_next_to_the_schemes() {
    let meta = WithMeta::widget_tool_attr().meta.unwrap().0;
    assert_eq!(meta["ui"], json!({"resourceUri": "ui://widget"}));
    assert_eq!(meta["securitySchemes"], json!([{"type": "noauth"}]));
}

/// (b, c, d) Through the layer: declared tools keep their definition as rmcp wrote it (only
/// the top-level copy the rmcp `Tool` type cannot hold is added, equal to the `_meta` one),
/// the undeclared tool gets its schemes from the fallback, and every tool's schemes are what
/// the layer then enforces on `tools/call`.
#[tokio::test]
async fn tools_list_shows_exactly_what_the_layer_enforces() {
    let srv = serve(AccessPolicy::new().lazy().tools(Srv::tool_requirements())).await;
    let list = srv.rpc(Some("files:read"), "tools/list", json!({})).await;
    assert_eq!(list.status, 200, "{list:?}");
    let tools = list.body["result"]["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 4);
    let defs = Srv::tool_router().list_all();
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        let schemes = &tool["securitySchemes"];
        assert!(schemes.is_array(), "{name}: {tool}");
        assert_eq!(&tool["_meta"]["securitySchemes"], schemes, "{name}");
        // Declared tools: the definition, unchanged but for the added top-level copy.
        let def = serde_json::to_value(defs.iter().find(|d| d.name == name).unwrap()).unwrap();
        let mut without_top = tool.clone();
        without_top
            .as_object_mut()
            .unwrap()
            .remove("securitySchemes");
        if name == "whoami" {
            // (c) Undeclared: only the fallback gave it schemes (the policy's base scopes,
            // none here).
            assert!(def.get("_meta").is_none());
            assert_eq!(schemes, &json!([{"type": "oauth2", "scopes": []}]));
        } else {
            assert_eq!(without_top, def, "{name}");
        }

        // (d) What is shown is what is enforced.
        let args = if name == "files_read" {
            read_args()
        } else {
            json!({})
        };
        let scheme = &schemes[0];
        if scheme["type"] == "noauth" {
            let r = srv.call(None, name, args.clone()).await;
            assert_eq!(r.status, 200, "{name}: {r:?}");
            assert!(r.body.get("result").is_some(), "{name}: {r:?}");
            continue;
        }
        let scopes: Vec<&str> = scheme["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let r = srv.call(None, name, args.clone()).await;
        assert_eq!(r.status, 401, "{name} without a token: {r:?}");
        if let Some((_, fewer)) = scopes.split_last().filter(|(_, rest)| !rest.is_empty()) {
            let r = srv.call(Some(&fewer.join(" ")), name, args.clone()).await;
            assert_eq!(r.status, 403, "{name} with {fewer:?}: {r:?}");
        }
        let granted = if scopes.is_empty() {
            "unrelated".to_owned()
        } else {
            scopes.join(" ")
        };
        let r = srv.call(Some(&granted), name, args).await;
        assert_eq!(r.status, 200, "{name} with {granted}: {r:?}");
        assert!(r.body.get("result").is_some(), "{name}: {r:?}");
    }
}
