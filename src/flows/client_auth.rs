//! Client authentication at the token, revocation and introspection endpoints, once the
//! credentials are off the wire.
//!
//! The adapter ([`server::client_auth`](crate::server)) reads the credentials from the
//! `Authorization: Basic` header or the form body and refuses requests that mix methods; a
//! `client_assertion` goes to `flows::client_assertion` instead (feature `private-key-jwt`).
//! This flow decides whether the named client is who it says:
//!
//! - an unknown client is `401 invalid_client` ("register again": Claude registers anew on
//!   exactly that answer);
//! - a confidential client must present its secret, which is hashed and compared with
//!   [`SecretHash::ct_eq`], and the secret must not have expired (`client_secret_expires_at`,
//!   read from [`Env::now`]);
//! - a public client must not present a secret;
//! - a `private_key_jwt` client is never authenticated here, with or without a secret: only
//!   its signed assertion does that (`client_assertion`, feature `private-key-jwt`).
//!
//! Every failure carries a `WWW-Authenticate: Basic` challenge when the client tried Basic.
//! Secrets never appear in logs or in error descriptions.

use super::Env;
use crate::error::OAuthError;
use crate::store::{Client, SecretHash, TokenEndpointAuthMethod};

/// The credentials a client presented, however it sent them.
#[derive(Clone, Copy)]
pub(crate) struct ClientCredentials<'a> {
    /// The client id (from Basic or the body).
    pub(crate) client_id: &'a str,
    /// The secret, when one was sent.
    pub(crate) secret: Option<&'a str>,
    /// Whether the credentials came in an `Authorization: Basic` header (errors then carry a
    /// Basic challenge).
    pub(crate) used_basic: bool,
}

impl std::fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.map(|_| "<redacted>"))
            .field("used_basic", &self.used_basic)
            .finish()
    }
}

/// A client-supplied name safe to echo in an error description or a log: short and
/// printable ASCII only.
pub(crate) fn printable_name(name: &str) -> String {
    if name.len() <= 40 && name.bytes().all(|b| b.is_ascii_graphic()) {
        name.to_owned()
    } else {
        "(unprintable)".to_owned()
    }
}

/// Authenticates a client by the credentials it presented; see the [module docs](self).
///
/// # Errors
/// `401 invalid_client` for an unknown client or a wrong, missing, unexpected or expired
/// secret; `503 temporarily_unavailable` when the store fails.
pub(crate) async fn authenticate(
    env: &Env,
    creds: ClientCredentials<'_>,
) -> Result<Client, OAuthError> {
    let used_basic = creds.used_basic;
    let Some(client) = env.client(creds.client_id).await? else {
        tracing::debug!(target: "mcp_oauth::token",
            client_id = %printable_name(creds.client_id), "unknown client");
        return Err(OAuthError::invalid_client(
            "Unknown client; register again",
            used_basic,
        ));
    };
    if client.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt {
        // It holds no secret, but it is not public: only a signed assertion authenticates it.
        tracing::info!(target: "mcp_oauth::security", client_id = %client.client_id,
            "client authentication failed: private_key_jwt client without an assertion");
        return Err(OAuthError::invalid_client(
            "This client authenticates with private_key_jwt: send client_assertion_type and client_assertion",
            used_basic,
        ));
    }
    match (&client.secret_hash, creds.secret) {
        (Some(stored), Some(presented)) => {
            if !SecretHash::of(presented).ct_eq(stored) {
                tracing::info!(target: "mcp_oauth::security", client_id = %client.client_id, "client authentication failed: wrong secret");
                return Err(OAuthError::invalid_client(
                    "Client authentication failed",
                    used_basic,
                ));
            }
            if client.secret_expires_at != 0 && client.secret_expires_at <= env.now() {
                return Err(OAuthError::invalid_client(
                    "The client secret has expired; register again",
                    used_basic,
                ));
            }
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_client(
                "This client is confidential and must authenticate with its secret",
                used_basic,
            ));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_client(
                "This client is public and has no secret; send only client_id",
                used_basic,
            ));
        }
        (None, None) => {}
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OAuthErrorCode;
    use crate::flows::test_env::TestEnv;

    fn creds<'a>(id: &'a str, secret: Option<&'a str>) -> ClientCredentials<'a> {
        ClientCredentials {
            client_id: id,
            secret,
            used_basic: true,
        }
    }

    #[tokio::test]
    async fn client_authentication_rules() {
        let t = TestEnv::new().await;
        // A dynamic confidential client whose secret expires 100 s from now.
        let mut expiring = t.confidential_client("expiring", "expiring-secret");
        expiring.secret_expires_at = t.start + 100;
        t.env.clients.insert_client(expiring).await.unwrap();
        // A private_key_jwt client: no secret, yet not public.
        let mut pkjwt = t.confidential_client("pkjwt", "unused");
        pkjwt.secret_hash = None;
        pkjwt.token_endpoint_auth_method = TokenEndpointAuthMethod::PrivateKeyJwt;
        t.env.clients.insert_client(pkjwt).await.unwrap();

        // (client id, secret, ok?, description fragment)
        let table: &[(&str, Option<&str>, bool, &str)] = &[
            ("public", None, true, ""),
            ("public", Some("anything"), false, "public"),
            ("confidential", Some(TestEnv::SECRET), true, ""),
            ("confidential", Some("wrong"), false, "failed"),
            ("confidential", None, false, "confidential"),
            ("nobody", None, false, "Unknown client"),
            ("expiring", Some("expiring-secret"), true, ""),
            ("pkjwt", None, false, "private_key_jwt"),
            ("pkjwt", Some("unused"), false, "private_key_jwt"),
        ];
        for (id, secret, ok, why) in table {
            let got = authenticate(&t.env, creds(id, *secret)).await;
            match got {
                Ok(c) => {
                    assert!(ok, "{id} {secret:?} was accepted");
                    assert_eq!(c.client_id, *id);
                }
                Err(e) => {
                    assert!(!ok, "{id} {secret:?} was refused: {e}");
                    assert_eq!(e.code(), OAuthErrorCode::InvalidClient);
                    assert!(e.description().contains(why), "{e}");
                    // Secrets never leak into the answer.
                    if let Some(s) = secret {
                        assert!(!e.description().contains(s));
                    }
                }
            }
        }

        // At its expiry time the secret stops working, even when right.
        t.advance(100);
        let e = authenticate(&t.env, creds("expiring", Some("expiring-secret")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), OAuthErrorCode::InvalidClient);
        assert!(e.description().contains("expired"));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let s = format!("{:?}", creds("c", Some("hunter2-secret")));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
