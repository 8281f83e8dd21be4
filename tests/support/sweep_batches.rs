//! A sweep check shared by the SQL store tests (issue 13): with a batch of 2 rows, a sweep
//! still removes everything that expired (in many batches, each its own transaction) and
//! nothing live, and reports the exact count.

use std::sync::Arc;

use mcp_oauth::scope::ScopeSet;
use mcp_oauth::store::{AuthorizationCode, CodeTake, GrantStore, RefreshFamily, SecretHash};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn code(expires_at: u64) -> AuthorizationCode {
    AuthorizationCode {
        client_id: "sweep-client".to_owned(),
        redirect_uri: "https://app.example.com/cb".to_owned(),
        redirect_uri_in_request: true,
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        scope: ScopeSet::parse("read").unwrap(),
        resource: "https://mcp.example.com/mcp".to_owned(),
        subject: "alice".to_owned(),
        claims: serde_json::Map::new(),
        auth_time: now(),
        expires_at,
    }
}

fn family(id: &str, expires_at: u64) -> RefreshFamily {
    RefreshFamily {
        family_id: id.to_owned(),
        client_id: "sweep-client".to_owned(),
        subject: "alice".to_owned(),
        scope: ScopeSet::parse("read").unwrap(),
        resource: "https://mcp.example.com/mcp".to_owned(),
        claims: serde_json::Map::new(),
        auth_time: now(),
        created_at: now(),
        expires_at,
    }
}

/// Runs the check; `store` must sweep in batches of 2.
pub(crate) async fn sweep_batches<S: GrantStore>(store: Arc<S>) {
    let n = now();
    let tag = format!("{n}-{}", std::process::id());
    for i in 0..7 {
        let h = SecretHash::of(&format!("{tag}-old-code-{i}"));
        store.put_code(h, code(n - 1)).await.unwrap();
    }
    let live_codes: Vec<_> = (0..3)
        .map(|i| SecretHash::of(&format!("{tag}-live-code-{i}")))
        .collect();
    for h in &live_codes {
        store.put_code(*h, code(n + 600)).await.unwrap();
    }
    let mut old_tokens = Vec::new();
    for i in 0..5 {
        let t = SecretHash::of(&format!("{tag}-old-rt-{i}"));
        store
            .create_family(family(&format!("old{i}x{n}"), n - 1), Some(t))
            .await
            .unwrap();
        old_tokens.push(t);
    }
    let live_token = SecretHash::of(&format!("{tag}-live-rt"));
    store
        .create_family(family(&format!("live{n}"), n + 3600), Some(live_token))
        .await
        .unwrap();
    for i in 0..3 {
        store
            .revoke_token(&format!("{tag}.jti{i}"), n - 1)
            .await
            .unwrap();
    }

    assert_eq!(
        store.sweep(n).await.unwrap(),
        7 + 5 + 3,
        "every expired code, family and revocation, over many batches"
    );
    assert_eq!(store.sweep(n).await.unwrap(), 0, "nothing left to sweep");
    for h in &live_codes {
        assert!(matches!(
            store.take_code(h, "f", n).await.unwrap(),
            CodeTake::Taken(_)
        ));
    }
    assert!(
        store
            .family_of_refresh(&live_token, n)
            .await
            .unwrap()
            .is_some()
    );
    for t in &old_tokens {
        assert!(store.family_of_refresh(t, n - 10).await.unwrap().is_none());
    }
}
