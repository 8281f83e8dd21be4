//! Tool-level authorization as clients see it: `securitySchemes` in `tools/list` (JSON and
//! SSE responses), optional filtering, and ChatGPT's tool-result challenge.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use http::{HeaderMap, Request, Response, StatusCode};
use mcp_oauth::keys::{KeyRing, SigningAlgorithm};
use mcp_oauth::resource::{AccessPolicy, ChallengeStyle, ChallengeStyleRule};
use mcp_oauth::{McpOAuthConfig, McpOAuthConfigBuilder, McpOAuthLayer};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
const CHATGPT_UA: &str = "openai-mcp/1.0.0 (ChatGPT)";

fn tools_result(id: &Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"result":{"tools":[
        {"name":"public_search","inputSchema":{"type":"object"}},
        {"name":"files_read","inputSchema":{"type":"object"}},
        {"name":"files_write","inputSchema":{"type":"object"},"_meta":{"keep":"me"}},
        {"name":"unlisted","inputSchema":{"type":"object"}}
    ]}})
}

/// The MCP stand-in: answers `tools/list` as JSON, or as SSE split over several frames when
/// the request says `accept: text/event-stream` only; `tools/call` succeeds.
async fn mcp(headers: HeaderMap, body: String) -> Response<Body> {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let id = msg["id"].clone();
    let reply = if msg["method"] == "tools/list" {
        tools_result(&id)
    } else {
        json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"ok"}]}})
    };
    if headers
        .get("accept")
        .is_some_and(|a| a == "text/event-stream")
    {
        let text = format!("event: message\nid: 1\ndata: {reply}\n\n");
        let (a, b) = text.split_at(text.len() / 2);
        let chunks: Vec<Result<String, std::io::Error>> = vec![
            Ok(": keep-alive\n\n".to_owned()),
            Ok(a.to_owned()),
            Ok(b.to_owned()),
        ];
        let stream = futures_util::stream::iter(chunks);
        (
            [("content-type", "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response()
    } else {
        axum::Json(reply).into_response()
    }
}

fn config() -> (KeyRing, McpOAuthConfigBuilder) {
    let ring = KeyRing::generate(SigningAlgorithm::Es256).unwrap();
    let builder = McpOAuthConfig::builder()
        .resource(RESOURCE)
        .issuer(ISSUER)
        .scope("files:read", "Read files")
        .scope("files:write", "Write files")
        .scope_implies("files:write", ["files:read"])
        .default_scopes(["files:read"])
        .key_ring(ring.clone())
        .policy(
            AccessPolicy::new()
                .lazy()
                .public_tool("public_search")
                .tool_scopes("files_read", ["files:read"])
                .tool_scopes("files_write", ["files:write"]),
        );
    (ring, builder)
}

fn make_app(cfg: McpOAuthConfig) -> Router {
    Router::new()
        .route("/mcp", post(mcp))
        .layer(McpOAuthLayer::new(cfg))
}

fn token(ring: &KeyRing, scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ring.sign(
        "at+jwt",
        &json!({"iss":ISSUER,"sub":"alice","aud":RESOURCE,"exp":now+600,"iat":now,"jti":format!("j{now}{scope}"),"scope":scope}),
    )
    .unwrap()
}

async fn send(
    app: &Router,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::post("/mcp").header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let h = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, h, String::from_utf8(bytes.to_vec()).unwrap())
}

fn list() -> Value {
    json!({"jsonrpc":"2.0","id":"list-1","method":"tools/list"})
}

fn call(name: &str) -> Value {
    json!({"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":name,"arguments":{}}})
}

fn schemes_of(result: &Value) -> Vec<(String, Value)> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["securitySchemes"].clone(),
            )
        })
        .collect()
}

fn expected_schemes() -> Vec<(String, Value)> {
    vec![
        ("public_search".to_owned(), json!([{"type":"noauth"}])),
        (
            "files_read".to_owned(),
            json!([{"type":"oauth2","scopes":["files:read"]}]),
        ),
        (
            "files_write".to_owned(),
            json!([{"type":"oauth2","scopes":["files:write"]}]),
        ),
        (
            "unlisted".to_owned(),
            json!([{"type":"oauth2","scopes":["files:read"]}]),
        ),
    ]
}

#[tokio::test]
async fn tools_list_json_gets_security_schemes() {
    let (_, b) = config();
    let app = make_app(b.build().unwrap());
    let (status, headers, body) = send(&app, list(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get("content-length")
            .is_none_or(|l| l.to_str().unwrap() == body.len().to_string())
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "list-1");
    assert_eq!(schemes_of(&v), expected_schemes());
    // The copy in _meta, next to what the tool had there already.
    let write = &v["result"]["tools"][2];
    assert_eq!(write["_meta"]["keep"], "me");
    assert_eq!(write["_meta"]["securitySchemes"], write["securitySchemes"]);
}

#[tokio::test]
async fn tools_list_sse_is_rewritten_event_by_event() {
    let (_, b) = config();
    let app = make_app(b.build().unwrap());
    let (status, headers, body) = send(&app, list(), &[("accept", "text/event-stream")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(body.starts_with(": keep-alive\n\n"), "{body}");
    let event = body.split("\n\n").nth(1).unwrap();
    assert!(
        event.contains("event: message\n") && event.contains("id: 1\n"),
        "{event}"
    );
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(schemes_of(&v), expected_schemes());
}

#[tokio::test]
async fn shaping_can_be_turned_off() {
    let (_, b) = config();
    let app = make_app(b.tools_list_security_schemes(false).build().unwrap());
    let (_, _, body) = send(&app, list(), &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, tools_result(&json!("list-1")));
}

#[tokio::test]
async fn filtered_list_shows_what_the_caller_may_call() {
    let (ring, b) = config();
    let app = make_app(b.filter_tools_list(true).build().unwrap());
    let names = |body: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, body) = send(&app, list(), &[]).await;
    assert_eq!(names(&body), ["public_search"]);
    let reader = format!("Bearer {}", token(&ring, "files:read"));
    let (_, _, body) = send(&app, list(), &[("authorization", &reader)]).await;
    assert_eq!(names(&body), ["public_search", "files_read", "unlisted"]);
    let writer = format!("Bearer {}", token(&ring, "files:write"));
    let (_, _, body) = send(&app, list(), &[("authorization", &writer)]).await;
    assert_eq!(
        names(&body),
        ["public_search", "files_read", "files_write", "unlisted"]
    );
}

fn www_in_meta(body: &str) -> (Value, String) {
    let v: Value = serde_json::from_str(body).unwrap();
    let challenges = v["result"]["_meta"]["mcp/www_authenticate"]
        .as_array()
        .unwrap();
    assert_eq!(challenges.len(), 1);
    let c = challenges[0].as_str().unwrap().to_owned();
    (v, c)
}

#[tokio::test]
async fn chatgpt_gets_a_tool_result_challenge_without_a_token() {
    let (_, b) = config();
    let app = make_app(b.build().unwrap());
    let (status, _, body) = send(&app, call("files_read"), &[("user-agent", CHATGPT_UA)]).await;
    assert_eq!(status, StatusCode::OK);
    let (v, c) = www_in_meta(&body);
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 42);
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(v["result"]["content"][0]["type"], "text");
    assert_eq!(
        c,
        format!(
            r#"Bearer resource_metadata="{PRM}", scope="files:read", error="insufficient_scope", error_description="Sign in to use this tool""#
        )
    );
}

#[tokio::test]
async fn chatgpt_gets_a_tool_result_challenge_for_missing_scope_and_bad_tokens() {
    let (ring, b) = config();
    let app = make_app(b.build().unwrap());
    let reader = format!("Bearer {}", token(&ring, "files:read"));
    let (status, _, body) = send(
        &app,
        call("files_write"),
        &[("user-agent", CHATGPT_UA), ("authorization", &reader)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, c) = www_in_meta(&body);
    assert!(c.contains(r#"scope="files:read files:write""#), "{c}");
    assert!(
        c.contains(r#"error="insufficient_scope""#) && c.contains("error_description="),
        "{c}"
    );

    let (status, _, body) = send(
        &app,
        call("files_read"),
        &[("user-agent", CHATGPT_UA), ("authorization", "Bearer junk")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, c) = www_in_meta(&body);
    assert!(c.contains(r#"error="invalid_token""#), "{c}");

    // With the scope, ChatGPT's call goes through to the tool.
    let writer = format!("Bearer {}", token(&ring, "files:write"));
    let (status, _, body) = send(
        &app,
        call("files_write"),
        &[("user-agent", CHATGPT_UA), ("authorization", &writer)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["content"][0]["text"],
        "ok"
    );
}

#[tokio::test]
async fn other_clients_get_http_challenges() {
    let (_, b) = config();
    let app = make_app(b.build().unwrap());
    for ua in ["Claude-User", "node", "rmcp"] {
        let (status, headers, _) = send(&app, call("files_read"), &[("user-agent", ua)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{ua}");
        assert!(headers.contains_key("www-authenticate"));
    }
}

#[tokio::test]
async fn style_rules_are_configurable() {
    let (_, b) = config();
    let app = make_app(
        b.challenge_style(ChallengeStyleRule::Always(ChallengeStyle::ToolResult))
            .build()
            .unwrap(),
    );
    let (status, _, body) = send(&app, call("files_read"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    www_in_meta(&body);
    // Non-tool requests still get HTTP challenges: only a tool result can carry _meta.
    let (_, b) = config();
    let app = make_app(
        b.challenge_style(ChallengeStyleRule::Always(ChallengeStyle::ToolResult))
            .build()
            .unwrap(),
    );
    let (status, _, _) = send(
        &app,
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, b) = config();
    let custom = ChallengeStyleRule::Custom(std::sync::Arc::new(|h: &HeaderMap| {
        if h.contains_key("x-wants-tool-result") {
            ChallengeStyle::ToolResult
        } else {
            ChallengeStyle::Http
        }
    }));
    let app = make_app(b.challenge_style(custom).build().unwrap());
    assert_eq!(
        send(&app, call("files_read"), &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, call("files_read"), &[("x-wants-tool-result", "1")])
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn trusted_headers_still_shape_and_challenge() {
    let (_, b) = config();
    let app = make_app(b.trust_mcp_headers(true).build().unwrap());
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let (_, _, body) = send(&app, list(), &h).await;
    assert_eq!(
        schemes_of(&serde_json::from_str(&body).unwrap()),
        expected_schemes()
    );
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "files_read"),
        ("user-agent", CHATGPT_UA),
    ];
    let (status, _, body) = send(&app, call("files_read"), &h).await;
    assert_eq!(status, StatusCode::OK);
    let (v, _) = www_in_meta(&body);
    assert_eq!(v["id"], 42);
}

/// A stand-in whose tools already show their schemes, top level and in `_meta` (what a
/// server declaring its tools at the source sends), written with its own spacing and key
/// order; or, with `mixed`, one tool declared only in `_meta` (what an rmcp tool under
/// `#[scoped_tools]` sends: rmcp's `Tool` has no top-level field for it), one undeclared and
/// one declaring the wrong scopes.
fn declared_body(id: &Value, mixed: bool) -> String {
    if mixed {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[ {{"name":"files_read", "inputSchema":{{"type":"object"}},"_meta":{{"securitySchemes":[{{"type":"oauth2","scopes":["files:read"]}}]}}}}, {{"name":"unlisted","inputSchema":{{}}}}, {{"name":"files_write","securitySchemes":[{{"type":"noauth"}}],"_meta":{{"securitySchemes":[{{"type":"noauth"}}]}}}} ],"nextCursor":"c"}}}}"#
        )
    } else {
        format!(
            r#"{{"jsonrpc":"2.0", "id":{id}, "result":{{ "tools":[{{"securitySchemes":[{{"type":"noauth"}}],"name":"public_search","_meta":{{"securitySchemes":[{{"type":"noauth"}}]}}}},{{"name":"files_read","_meta":{{"x":1,"securitySchemes":[{{"scopes":["files:read"],"type":"oauth2"}}]}},"securitySchemes":[{{"type":"oauth2","scopes":["files:read"]}}]}}]}}}}"#
        )
    }
}

async fn declared_mcp(headers: HeaderMap, body: String) -> Response<Body> {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let text = declared_body(&msg["id"], headers.contains_key("x-mixed"));
    if headers
        .get("accept")
        .is_some_and(|a| a == "text/event-stream")
    {
        (
            [("content-type", "text/event-stream")],
            format!("event: message\ndata: {text}\n\n"),
        )
            .into_response()
    } else {
        ([("content-type", "application/json")], text).into_response()
    }
}

fn declared_app() -> Router {
    let (_, b) = config();
    Router::new()
        .route("/mcp", post(declared_mcp))
        .layer(McpOAuthLayer::new(b.build().unwrap()))
}

/// (b) A `tools/list` whose tools already show what the layer enforces passes through byte
/// for byte, as JSON and as SSE: nothing is parsed into a tree or re-serialised.
#[tokio::test]
async fn declared_tools_list_passes_byte_for_byte() {
    let app = declared_app();
    let (status, _, body) = send(&app, list(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, declared_body(&json!("list-1"), false));
    let (_, _, body) = send(&app, list(), &[("accept", "text/event-stream")]).await;
    assert_eq!(
        body,
        format!(
            "event: message\ndata: {}\n\n",
            declared_body(&json!("list-1"), false)
        )
    );
}

/// (c, d) Only the tools that need it change: the `_meta`-declared tool gains the top-level
/// copy (the rest of its bytes as they were), the undeclared tool gets both copies from the
/// fallback, a tool declaring schemes other than the policy's is corrected to what the
/// layer enforces, and everything around the tools is kept byte for byte.
#[tokio::test]
async fn the_fallback_touches_only_the_tools_that_need_it() {
    let app = declared_app();
    let (status, _, body) = send(&app, list(), &[("x-mixed", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with(r#"{"jsonrpc":"2.0","id":"list-1","result":{"tools":["#),
        "{body}"
    );
    assert!(body.ends_with(r#"],"nextCursor":"c"}}"#), "{body}");
    assert!(
        body.contains(r#"{"securitySchemes":[{"scopes":["files:read"],"type":"oauth2"}],"name":"files_read", "inputSchema":{"type":"object"},"_meta":{"securitySchemes":[{"type":"oauth2","scopes":["files:read"]}]}}"#),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let tools = v["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 3);
    let read = json!([{"type":"oauth2","scopes":["files:read"]}]);
    let write = json!([{"type":"oauth2","scopes":["files:write"]}]);
    assert_eq!(tools[0]["securitySchemes"], read);
    assert_eq!(tools[1]["name"], "unlisted");
    assert_eq!(tools[1]["securitySchemes"], read);
    assert_eq!(tools[1]["_meta"]["securitySchemes"], read);
    assert_eq!(tools[1]["inputSchema"], json!({}));
    assert_eq!(tools[2]["securitySchemes"], write);
    assert_eq!(tools[2]["_meta"]["securitySchemes"], write);
}

/// Filtering still drops what the caller may not call, declared or not.
#[tokio::test]
async fn filtering_applies_to_declared_tools_too() {
    let (ring, b) = config();
    let app = Router::new()
        .route("/mcp", post(declared_mcp))
        .layer(McpOAuthLayer::new(
            b.filter_tools_list(true).build().unwrap(),
        ));
    let (_, _, body) = send(&app, list(), &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public_search"]);
    // With the scope, nothing is dropped and nothing needs adding: byte for byte.
    let auth = format!("Bearer {}", token(&ring, "files:read"));
    let (_, _, body) = send(&app, list(), &[("authorization", &auth)]).await;
    assert_eq!(body, declared_body(&json!("list-1"), false));
}

/// The shaping of a `tools/list` is remembered per layer configuration: two layers with
/// different policies over the same answer, called in turn, each show their own policy.
#[tokio::test]
async fn remembered_shaping_is_per_configuration() {
    let (_, a) = config();
    let a = make_app(a.build().unwrap());
    let (_, b) = config();
    let b = make_app(
        b.policy(AccessPolicy::new().lazy().public_tool("files_read"))
            .build()
            .unwrap(),
    );
    for _ in 0..3 {
        let (_, _, body) = send(&a, list(), &[]).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(schemes_of(&v), expected_schemes());
        let (_, _, body) = send(&b, list(), &[]).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["result"]["tools"][1]["securitySchemes"],
            json!([{"type": "noauth"}])
        );
        assert_eq!(
            v["result"]["tools"][0]["securitySchemes"],
            json!([{"type": "oauth2", "scopes": ["files:read"]}])
        );
    }
}

/// Answers `tools/list` the way rmcp writes it (`jsonrpc`, `id`, `result` in that order, no
/// spaces), echoing the request id.
async fn rmcp_like(body: String) -> Response<Body> {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let id = serde_json::to_string(&msg["id"]).unwrap();
    let text = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"files_read","_meta":{{"securitySchemes":[{{"type":"oauth2","scopes":["files:read"]}}]}}}},{{"name":"unlisted"}}]}}}}"#
    );
    ([("content-type", "application/json")], text).into_response()
}

/// The same list again under another id (recognised without a parse) is shaped like the
/// first, with its own id; ids that could hide structure take the full path, same result.
#[tokio::test]
async fn the_same_list_under_new_ids_is_shaped_alike() {
    let (_, b) = config();
    let app = Router::new()
        .route("/mcp", post(rmcp_like))
        .layer(McpOAuthLayer::new(b.build().unwrap()));
    let read = json!([{"type": "oauth2", "scopes": ["files:read"]}]);
    for id in [
        json!(1),
        json!(2),
        json!("list-7"),
        json!(-3),
        json!("q\"uote"),
        json!("back\\slash"),
        json!(1.5),
        json!(null),
    ] {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        let (status, _, body) = send(&app, req, &[]).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["id"], id, "{body}");
        let tools = v["result"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2, "{body}");
        for t in tools {
            assert_eq!(t["securitySchemes"], read, "{body}");
            assert_eq!(t["_meta"]["securitySchemes"], read, "{body}");
        }
    }
}
