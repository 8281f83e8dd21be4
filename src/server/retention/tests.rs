//! The retention settings' ranges and the upkeep task's life.

use super::*;
use crate::authn::StaticUsers;

fn upkeep(retention: Retention) -> Upkeep {
    Upkeep {
        retention,
        ..Upkeep::default()
    }
}

#[test]
fn ranges_and_the_refresh_floor() {
    let day = Duration::from_secs(24 * 3600);
    let refresh = 30 * day;
    let u = Upkeep::default().validate(refresh).unwrap();
    assert_eq!(u.idle_after, Some(90 * day));
    let short = upkeep(Retention::default().with_idle_client_after(2 * day));
    let u = short.validate(refresh).unwrap();
    assert_eq!(
        u.idle_after,
        Some(refresh + Duration::from_secs(TOUCH_INTERVAL_SECS)),
        "never shorter than a refresh family can live"
    );
    let bad = upkeep(Retention::default().with_idle_client_after(Duration::from_secs(3600)));
    assert!(matches!(
        bad.validate(refresh),
        Err(ConfigError::OutOfRange {
            field: "retention.idle_client_after",
            ..
        })
    ));
    let bad = upkeep(Retention::default().with_sweep_every(Duration::from_millis(10)));
    assert!(matches!(
        bad.validate(refresh),
        Err(ConfigError::OutOfRange {
            field: "retention.sweep_every",
            ..
        })
    ));
    let off = upkeep(Retention::default().manual().keep_idle_clients());
    assert_eq!(off.validate(refresh).unwrap().idle_after, None);
}

#[test]
fn jitter_stays_below_its_bound() {
    for _ in 0..100 {
        assert!(jitter(Duration::from_millis(50)) < Duration::from_millis(50));
    }
    assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
}

#[tokio::test]
async fn the_task_ends_with_the_server() {
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .retention(Retention::default().with_sweep_every(Duration::from_secs(1)))
        .build()
        .await
        .unwrap();
    let upkeep = server.start_upkeep();
    assert!(upkeep.is_running());
    let weak = Arc::downgrade(&server.inner);
    drop(server);
    assert!(
        weak.upgrade().is_none(),
        "the task must not keep the server alive"
    );
    for _ in 0..200 {
        if !upkeep.is_running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sweep task must end when the server is dropped");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_sweep() {
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .retention(Retention::default().with_sweep_every(Duration::from_secs(1)))
        .build()
        .await
        .unwrap();
    let upkeep = server.start_upkeep();
    assert!(upkeep.is_running());
    let task = upkeep.0.as_ref().unwrap().abort_handle();
    upkeep.stop();
    for _ in 0..200 {
        if task.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sweep task must end with its handle");
}

#[tokio::test]
async fn manual_retention_starts_nothing() {
    let server = AuthorizationServer::builder()
        .authenticator(StaticUsers::new())
        .retention(Retention::default().manual())
        .build()
        .await
        .unwrap();
    assert!(!server.start_upkeep().is_running());
}

#[test]
fn outside_a_runtime_starts_nothing() {
    // Built on a runtime (building is async), then used outside it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let server = runtime
        .block_on(
            AuthorizationServer::builder()
                .authenticator(StaticUsers::new())
                .build(),
        )
        .unwrap();
    assert!(!server.start_upkeep().is_running());
}
