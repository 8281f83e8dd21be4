//! Table tests of the token grants at the flow level, over a `MemoryStore` and a
//! `FakeClock`.

use super::*;
use crate::flows::test_env::{REDIRECT, RESOURCE, TestEnv};

/// A well-formed verifier, and another one.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const OTHER_VERIFIER: &str = "0000000000000000000000000000000000000000000";

fn code_request<'a>(code: &'a str, verifier: &'a str) -> TokenRequest<'a> {
    TokenRequest::AuthorizationCode {
        code,
        redirect_uri: Some(REDIRECT),
        code_verifier: verifier,
        resource: None,
    }
}

fn refresh_request(token: &str) -> TokenRequest<'_> {
    TokenRequest::RefreshToken {
        refresh_token: token,
        scope: None,
        resource: None,
    }
}

/// Issues a code to `client_id` and exchanges it: the tokens of a fresh family.
async fn grant(t: &TestEnv, client_id: &str) -> Tokens {
    t.put_code("the-code", client_id, VERIFIER).await;
    let client = t.client(client_id).await;
    exchange(&t.env, &client, code_request("the-code", VERIFIER))
        .await
        .unwrap()
}

/// The family id of an access token's `jti` (`"{family}.{random}"`).
fn family_of(tokens: &Tokens) -> &str {
    tokens.access.jti.split('.').next().unwrap()
}

#[test]
fn sealing_round_trips_only_with_the_presented_token() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = rt.block_on(TestEnv::new());
    let sealed = seal_successor(&t.env, "old-token", "fam", "new-token").unwrap();
    assert_eq!(
        open_successor("old-token", "fam", &sealed).as_deref(),
        Some("new-token")
    );
    assert_eq!(open_successor("other-token", "fam", &sealed), None);
    assert_eq!(open_successor("old-token", "other-fam", &sealed), None);
    assert_eq!(open_successor("old-token", "fam", &sealed[..5]), None);
    let again = seal_successor(&t.env, "old-token", "fam", "new-token").unwrap();
    assert_ne!(sealed, again, "a fresh nonce every time");
}

#[test]
fn verifier_rules() {
    assert!(verifier_well_formed(&"a".repeat(43)));
    assert!(verifier_well_formed(&"A-._~9".repeat(22)[..128]));
    assert!(!verifier_well_formed(&"a".repeat(42)));
    assert!(!verifier_well_formed(&"a".repeat(129)));
    assert!(!verifier_well_formed(&format!("{}+", "a".repeat(42))));
}

#[test]
fn pkce_s256() {
    // RFC 7636 appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(pkce_matches(verifier, challenge));
    assert!(!pkce_matches(verifier, &challenge[..42]));
    assert!(!pkce_matches("x", challenge));
}

/// One authorization-code exchange: what is sent, and what must come back (`None`: tokens).
struct CodeCase {
    name: &'static str,
    /// Seconds the clock moves between issuing the code and exchanging it.
    wait: u64,
    client: &'static str,
    code: &'static str,
    verifier: &'static str,
    redirect_uri: Option<&'static str>,
    resource: Option<&'static str>,
    expect: Option<(OAuthErrorCode, &'static str)>,
    /// Whether the code is spent afterwards (a retry with the right request fails).
    spent: bool,
}

const fn case(name: &'static str) -> CodeCase {
    CodeCase {
        name,
        wait: 0,
        client: "public",
        code: "the-code",
        verifier: VERIFIER,
        redirect_uri: Some(REDIRECT),
        resource: None,
        expect: None,
        spent: true,
    }
}

#[tokio::test]
async fn code_exchange_rules() {
    use OAuthErrorCode::{InvalidGrant, InvalidRequest, InvalidTarget};
    let cases = [
        case("the right request"),
        CodeCase {
            resource: Some(RESOURCE),
            ..case("the right resource")
        },
        CodeCase {
            wait: 59,
            ..case("just before the code expires")
        },
        CodeCase {
            wait: 60,
            expect: Some((InvalidGrant, "Unknown or expired")),
            ..case("at the code's expiry")
        },
        CodeCase {
            code: "another-code",
            expect: Some((InvalidGrant, "Unknown or expired")),
            spent: false,
            ..case("an unknown code")
        },
        CodeCase {
            verifier: "short",
            expect: Some((InvalidGrant, "code_verifier must be")),
            spent: false,
            ..case("a malformed verifier (checked before the code is taken)")
        },
        CodeCase {
            verifier: OTHER_VERIFIER,
            expect: Some((InvalidGrant, "PKCE")),
            ..case("the wrong verifier")
        },
        CodeCase {
            client: "confidential",
            expect: Some((InvalidGrant, "another client")),
            ..case("another client")
        },
        CodeCase {
            redirect_uri: Some("https://app.example.com/other"),
            expect: Some((InvalidGrant, "redirect_uri does not match")),
            ..case("another redirect URI")
        },
        CodeCase {
            redirect_uri: None,
            expect: Some((InvalidRequest, "redirect_uri is required")),
            ..case("no redirect URI when the request carried one")
        },
        CodeCase {
            resource: Some("https://other.example.com/mcp"),
            expect: Some((InvalidTarget, "resource")),
            ..case("another resource")
        },
    ];
    for c in cases {
        let t = TestEnv::new().await;
        t.put_code("the-code", "public", VERIFIER).await;
        t.advance(c.wait);
        let client = t.client(c.client).await;
        let got = exchange(
            &t.env,
            &client,
            TokenRequest::AuthorizationCode {
                code: c.code,
                redirect_uri: c.redirect_uri,
                code_verifier: c.verifier,
                resource: c.resource,
            },
        )
        .await;
        match (&got, c.expect) {
            (Ok(tokens), None) => {
                assert!(tokens.refresh_token.is_some(), "{}: refresh token", c.name);
                assert_eq!(tokens.scope.to_string(), "read write", "{}", c.name);
                assert_eq!(tokens.access.expires_in, 3600, "{}", c.name);
            }
            (Err(e), Some((code, why))) => {
                assert_eq!(e.code(), code, "{}: {e}", c.name);
                assert!(e.description().contains(why), "{}: {e}", c.name);
            }
            _ => panic!("{}: got {got:?}", c.name),
        }
        // The right request afterwards: refused when the code is spent.
        let public = t.client("public").await;
        let retry = exchange(&t.env, &public, code_request("the-code", VERIFIER)).await;
        assert_eq!(
            retry.is_err(),
            c.spent || c.wait >= 60,
            "{}: retry {retry:?}",
            c.name
        );
    }
}

#[tokio::test]
async fn no_refresh_token_for_a_client_without_the_grant() {
    let t = TestEnv::new().await;
    let mut client = t.confidential_client("code-only", "secret");
    client.grant_types = vec!["authorization_code".to_owned()];
    t.env.clients.insert_client(client.clone()).await.unwrap();
    t.put_code("the-code", "code-only", VERIFIER).await;
    let tokens = exchange(&t.env, &client, code_request("the-code", VERIFIER))
        .await
        .unwrap();
    assert!(tokens.refresh_token.is_none());
}

// Issue 8 item 6: a replayed code revokes the family its first redemption created only
// when the replay comes from the code's own client with the right verifier.
#[tokio::test]
async fn code_replay_revokes_the_family_only_for_its_owner_with_the_verifier() {
    // (replaying client, verifier, family revoked?)
    let table = [
        ("public", VERIFIER, true),
        ("public", OTHER_VERIFIER, false),
        ("confidential", VERIFIER, false),
        ("confidential", OTHER_VERIFIER, false),
    ];
    for (replayer, verifier, revoked) in table {
        let t = TestEnv::new().await;
        let first = grant(&t, "public").await;
        let client = t.client(replayer).await;
        let e = exchange(&t.env, &client, code_request("the-code", verifier))
            .await
            .unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::InvalidGrant, "{replayer}");
        assert!(e.description().contains("already used"), "{e}");

        let jti_revoked = t
            .env
            .grants
            .is_token_revoked(&first.access.jti, t.env.now())
            .await
            .unwrap();
        assert_eq!(jti_revoked, revoked, "{replayer} {verifier}: access token");
        let public = t.client("public").await;
        let refresh = exchange(
            &t.env,
            &public,
            refresh_request(first.refresh_token.as_deref().unwrap()),
        )
        .await;
        assert_eq!(
            refresh.is_err(),
            revoked,
            "{replayer} {verifier}: refresh {refresh:?}"
        );
    }
}

/// Issue 13: a delivered grant is never delivered again: the same request after a
/// successful exchange is a replay (revoked), and the sealed copy is gone.
#[tokio::test]
async fn a_delivered_grant_is_not_delivered_again() {
    let t = TestEnv::new().await;
    let first = grant(&t, "public").await;
    let family = family_of(&first).to_owned();
    assert_eq!(
        t.env
            .grants
            .initial_grant(&family, t.env.now())
            .await
            .unwrap(),
        None,
        "claimed on delivery"
    );
    let public = t.client("public").await;
    let e = exchange(&t.env, &public, code_request("the-code", VERIFIER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidGrant);
    assert!(
        t.env
            .grants
            .is_token_revoked(&first.access.jti, t.env.now())
            .await
            .unwrap()
    );
}

/// Issue 13: a failed check spends the code for good: the right request afterwards gets
/// `invalid_grant` (one guess per code), and no family is created.
#[tokio::test]
async fn a_failed_check_spends_the_code_for_good() {
    let t = TestEnv::new().await;
    t.put_code("the-code", "public", VERIFIER).await;
    let public = t.client("public").await;
    let e = exchange(&t.env, &public, code_request("the-code", OTHER_VERIFIER))
        .await
        .unwrap_err();
    assert!(e.description().contains("PKCE"), "{e}");
    let e = exchange(&t.env, &public, code_request("the-code", VERIFIER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), OAuthErrorCode::InvalidGrant);
    assert!(e.description().contains("already used"), "{e}");
    assert_eq!(
        t.env.grants.stats(t.env.now()).await.unwrap().live_families,
        0
    );
}

/// How [`Flaky`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flake {
    /// A store with only the required methods (two-step exchange) whose `create_family`
    /// fails once.
    CreateFamily,
    /// A store with the atomic redemption whose `redeem_code` commits, then fails once (a
    /// timeout after the commit).
    AfterCommit,
    /// A store whose first delivery claim fails (the tokens were minted, never sent).
    Claim,
}

/// A `MemoryStore` that fails once, as [`Flake`] says.
struct Flaky {
    inner: std::sync::Arc<dyn crate::store::GrantStore>,
    mode: Flake,
    failed: std::sync::atomic::AtomicBool,
}

impl Flaky {
    /// `true` the first time only.
    fn fail_now(&self) -> bool {
        !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl crate::store::GrantStore for Flaky {
    async fn put_code(
        &self,
        h: SecretHash,
        c: crate::store::AuthorizationCode,
    ) -> Result<(), StoreError> {
        self.inner.put_code(h, c).await
    }
    async fn take_code(&self, h: &SecretHash, f: &str, n: u64) -> Result<CodeTake, StoreError> {
        self.inner.take_code(h, f, n).await
    }
    async fn create_family(
        &self,
        f: RefreshFamily,
        r: Option<SecretHash>,
    ) -> Result<(), StoreError> {
        if self.mode == Flake::CreateFamily && self.fail_now() {
            return Err(StoreError::unavailable("flaky: create_family"));
        }
        self.inner.create_family(f, r).await
    }
    async fn peek_code(&self, h: &SecretHash, n: u64) -> Result<CodePeek, StoreError> {
        match self.mode {
            Flake::CreateFamily => Ok(CodePeek::Unsupported),
            _ => self.inner.peek_code(h, n).await,
        }
    }
    async fn redeem_code(
        &self,
        h: &SecretHash,
        r: CodeRedemption,
        n: u64,
    ) -> Result<CodeRedeem, StoreError> {
        assert_ne!(self.mode, Flake::CreateFamily);
        let done = self.inner.redeem_code(h, r, n).await?;
        if self.mode == Flake::AfterCommit && self.fail_now() {
            return Err(StoreError::unavailable("flaky: no answer after the commit"));
        }
        Ok(done)
    }
    async fn initial_grant(
        &self,
        f: &str,
        n: u64,
    ) -> Result<Option<crate::store::InitialGrant>, StoreError> {
        match self.mode {
            Flake::CreateFamily => Ok(None),
            _ => self.inner.initial_grant(f, n).await,
        }
    }
    async fn claim_initial_grant(&self, f: &str) -> Result<bool, StoreError> {
        match self.mode {
            Flake::CreateFamily => Ok(true),
            Flake::Claim if self.fail_now() => {
                Err(StoreError::unavailable("flaky: claim_initial_grant"))
            }
            _ => self.inner.claim_initial_grant(f).await,
        }
    }
    async fn rotate_refresh(
        &self,
        p: &SecretHash,
        s: SecretHash,
        sealed: Vec<u8>,
        n: u64,
        g: u64,
    ) -> Result<Rotation, StoreError> {
        self.inner.rotate_refresh(p, s, sealed, n, g).await
    }
    async fn revoke_family(&self, f: &str, n: u64) -> Result<(), StoreError> {
        self.inner.revoke_family(f, n).await
    }
    async fn family_of_refresh(
        &self,
        h: &SecretHash,
        n: u64,
    ) -> Result<Option<crate::store::RefreshLookup>, StoreError> {
        self.inner.family_of_refresh(h, n).await
    }
    async fn revoke_token(&self, j: &str, e: u64) -> Result<(), StoreError> {
        self.inner.revoke_token(j, e).await
    }
    async fn is_token_revoked(&self, j: &str, n: u64) -> Result<bool, StoreError> {
        self.inner.is_token_revoked(j, n).await
    }
    async fn get_consent(&self, s: &str, c: &str) -> Result<Option<ScopeSet>, StoreError> {
        self.inner.get_consent(s, c).await
    }
    async fn put_consent(&self, s: &str, c: &str, sc: &ScopeSet, n: u64) -> Result<(), StoreError> {
        self.inner.put_consent(s, c, sc, n).await
    }
    async fn put_pending(
        &self,
        i: &str,
        p: crate::store::PendingAuthorization,
    ) -> Result<(), StoreError> {
        self.inner.put_pending(i, p).await
    }
    async fn get_pending(
        &self,
        i: &str,
        n: u64,
    ) -> Result<Option<crate::store::PendingAuthorization>, StoreError> {
        self.inner.get_pending(i, n).await
    }
    async fn take_pending(
        &self,
        i: &str,
        n: u64,
    ) -> Result<Option<crate::store::PendingAuthorization>, StoreError> {
        self.inner.take_pending(i, n).await
    }
    async fn sweep(&self, n: u64) -> Result<u64, StoreError> {
        self.inner.sweep(n).await
    }
    async fn stats(&self, n: u64) -> Result<crate::store::StoreStats, StoreError> {
        self.inner.stats(n).await
    }
}

/// A test environment whose grant store is a [`Flaky`] over its memory store.
async fn flaky_env(mode: Flake) -> TestEnv {
    let mut t = TestEnv::new().await;
    t.env.grants = std::sync::Arc::new(Flaky {
        inner: t.env.grants.clone(),
        mode,
        failed: std::sync::atomic::AtomicBool::new(false),
    });
    t
}

/// Issue 13 item 6: a store hiccup during a code exchange must not sign the user out. The
/// first attempt answers `503`; the client's retry of the same request gets tokens, which
/// work, and nothing was revoked.
#[tokio::test]
async fn a_store_hiccup_during_the_code_exchange_does_not_sign_the_user_out() {
    for mode in [Flake::CreateFamily, Flake::AfterCommit, Flake::Claim] {
        let t = flaky_env(mode).await;
        t.put_code("the-code", "public", VERIFIER).await;
        let public = t.client("public").await;
        let e = exchange(&t.env, &public, code_request("the-code", VERIFIER))
            .await
            .unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::TemporarilyUnavailable, "{mode:?}");
        let tokens = exchange(&t.env, &public, code_request("the-code", VERIFIER))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: the retry must get tokens: {e}"));
        let refreshed = exchange(
            &t.env,
            &public,
            refresh_request(tokens.refresh_token.as_deref().unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: the refresh token works: {e}"));
        assert_eq!(family_of(&refreshed), family_of(&tokens), "{mode:?}");
        // Delivered now: the same request again is a replay.
        let e = exchange(&t.env, &public, code_request("the-code", VERIFIER))
            .await
            .unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::InvalidGrant, "{mode:?}");
        assert!(
            t.env
                .grants
                .is_token_revoked(&tokens.access.jti, t.env.now())
                .await
                .unwrap(),
            "{mode:?}: a replay after the delivery revokes"
        );
    }
}

/// What a refresh step does in [`refresh_rules`].
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Move the clock.
    Wait(u64),
    /// Refresh with the current token: a new one comes back.
    Rotate,
    /// Refresh with the token before the current one: the same successor comes back.
    PreviousInGrace,
    /// Refresh with the token before the current one: reuse, the family is revoked.
    PreviousReused,
    /// Refresh with the current token: refused.
    CurrentRefused,
    /// Revoke the family.
    Revoke,
}

#[tokio::test]
async fn refresh_rules() {
    use Step::{CurrentRefused, PreviousInGrace, PreviousReused, Revoke, Rotate, Wait};
    const DAY: u64 = 24 * 3600;
    // Refresh tokens live 30 days; the rotation grace window is 30 s.
    let table: &[(&str, &[Step])] = &[
        ("rotation", &[Rotate, Rotate, Rotate]),
        (
            "concurrent refresh inside the grace window",
            &[Rotate, Wait(30), PreviousInGrace, PreviousInGrace],
        ),
        (
            "replay after the grace window revokes the family",
            &[Rotate, Wait(31), PreviousReused, CurrentRefused],
        ),
        ("refresh expiry", &[Wait(30 * DAY - 1), Rotate]),
        ("refresh expired", &[Wait(30 * DAY), CurrentRefused]),
        (
            "rotation does not extend the family",
            &[Wait(29 * DAY), Rotate, Wait(DAY), CurrentRefused],
        ),
        ("revoked family", &[Revoke, CurrentRefused]),
        ("revoked after rotation", &[Rotate, Revoke, CurrentRefused]),
    ];
    for (name, steps) in table {
        let t = TestEnv::new().await;
        let first = grant(&t, "public").await;
        let family = family_of(&first).to_owned();
        let client = t.client("public").await;
        let mut previous: Option<String> = None;
        let mut current = first.refresh_token.unwrap();
        for step in *steps {
            match step {
                Wait(s) => t.advance(*s),
                Rotate => {
                    let got = exchange(&t.env, &client, refresh_request(&current))
                        .await
                        .unwrap_or_else(|e| panic!("{name}: {step:?}: {e}"));
                    assert_eq!(family_of(&got), family, "{name}: same family");
                    let next = got.refresh_token.unwrap();
                    assert_ne!(next, current, "{name}: rotated");
                    previous = Some(std::mem::replace(&mut current, next));
                }
                PreviousInGrace => {
                    let prev = previous.as_deref().unwrap();
                    let got = exchange(&t.env, &client, refresh_request(prev))
                        .await
                        .unwrap_or_else(|e| panic!("{name}: {step:?}: {e}"));
                    assert_eq!(
                        got.refresh_token.as_deref(),
                        Some(current.as_str()),
                        "{name}: the same successor"
                    );
                }
                PreviousReused => {
                    let prev = previous.as_deref().unwrap();
                    let e = exchange(&t.env, &client, refresh_request(prev))
                        .await
                        .unwrap_err();
                    assert_eq!(e.code(), OAuthErrorCode::InvalidGrant, "{name}");
                    assert!(e.description().contains("already used"), "{name}: {e}");
                }
                CurrentRefused => {
                    let e = exchange(&t.env, &client, refresh_request(&current))
                        .await
                        .unwrap_err();
                    assert_eq!(e.code(), OAuthErrorCode::InvalidGrant, "{name}: {e}");
                }
                Revoke => t
                    .env
                    .grants
                    .revoke_family(&family, t.env.now())
                    .await
                    .unwrap(),
            }
        }
    }
}

#[tokio::test]
async fn refresh_request_checks_come_before_rotation() {
    use OAuthErrorCode::{InvalidGrant, InvalidScope, InvalidTarget};
    // (client, scope, resource, expected error)
    let table: &[(&str, Option<&str>, Option<&str>, OAuthErrorCode)] = &[
        ("confidential", None, None, InvalidGrant),
        ("public", Some("read write admin"), None, InvalidScope),
        ("public", Some("read \u{1}"), None, InvalidScope),
        (
            "public",
            None,
            Some("https://other.example.com/mcp"),
            InvalidTarget,
        ),
    ];
    for (client_id, scope, resource, code) in table {
        let t = TestEnv::new().await;
        let first = grant(&t, "public").await;
        let token = first.refresh_token.unwrap();
        let client = t.client(client_id).await;
        let e = exchange(
            &t.env,
            &client,
            TokenRequest::RefreshToken {
                refresh_token: &token,
                scope: *scope,
                resource: *resource,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), *code, "{client_id} {scope:?} {resource:?}: {e}");
        // The refused request did not burn the token: its owner still refreshes.
        let public = t.client("public").await;
        exchange(&t.env, &public, refresh_request(&token))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn refresh_may_narrow_the_scope() {
    let t = TestEnv::new().await;
    let first = grant(&t, "public").await;
    let client = t.client("public").await;
    let got = exchange(
        &t.env,
        &client,
        TokenRequest::RefreshToken {
            refresh_token: first.refresh_token.as_deref().unwrap(),
            scope: Some("read"),
            resource: Some(RESOURCE),
        },
    )
    .await
    .unwrap();
    assert_eq!(got.scope.to_string(), "read");
}

#[test]
fn debug_output_holds_no_secrets() {
    let r = code_request("secret-code", VERIFIER);
    let s = format!("{r:?}");
    assert!(!s.contains("secret-code") && !s.contains(VERIFIER), "{s}");
    let s = format!("{:?}", refresh_request("secret-refresh"));
    assert!(!s.contains("secret-refresh"), "{s}");
}
