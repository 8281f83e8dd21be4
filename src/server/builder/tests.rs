//! What the builder refuses, and how it names the problem.

use super::*;
use crate::authn::StaticUsers;

fn builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder().authenticator(StaticUsers::new())
}

async fn problem(b: AuthorizationServerBuilder) -> (String, ClientProblem) {
    match b.build().await {
        Err(ConfigError::InvalidClient { client_id, problem }) => (client_id, problem),
        other => panic!("expected InvalidClient, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_clients_name_the_client_and_the_problem() {
    let (id, p) = problem(builder().client(StaticClient::public(
        "https://app.example.com/client.json",
        ["https://app.example.com/cb"],
    )))
    .await;
    assert_eq!(id, "https://app.example.com/client.json");
    assert_eq!(p, ClientProblem::ReservedId);

    let (id, p) =
        problem(builder().client(StaticClient::public("c1", ["javascript:alert(1)"]))).await;
    assert_eq!(id, "c1");
    assert!(
        matches!(&p, ClientProblem::RedirectUri { uri, .. } if uri == "javascript:alert(1)"),
        "{p:?}"
    );

    let (id, p) = problem(
        builder()
            .client(StaticClient::public("pub", ["https://rs.example.com/cb"]))
            .introspection_clients(["pub"]),
    )
    .await;
    assert_eq!(id, "pub");
    assert_eq!(p, ClientProblem::IntrospectionClientNotConfidential);

    let (id, p) = problem(builder().introspection_clients(["nobody"])).await;
    assert_eq!(id, "nobody");
    assert_eq!(p, ClientProblem::IntrospectionClientNotConfigured);
}

#[tokio::test]
async fn out_of_range_lifetimes_are_refused_with_their_field() {
    let err = builder()
        .access_token_ttl(Duration::from_secs(5))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::OutOfRange {
                field: "access_token_ttl",
                value: 5,
                ..
            }
        ),
        "{err:?}"
    );
}
