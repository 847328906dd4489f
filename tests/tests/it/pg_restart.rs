//! Acknowledged uploads are never lost across a restart of PostgreSQL, and the submit service
//! recovers on its own (DESIGN §6, §7): the real service, its store built as the binary builds
//! it, under continuous upload while the cluster of `infra/dev/test` that tests may restart is
//! restarted with `pg_ctl restart -m fast` (`restart_load`).

use std::time::Duration;

use diagnosis_tests::restart_load::{LoadSettings, RestartableCluster, upload_through_restarts};

#[tokio::test]
async fn acknowledged_uploads_survive_restarts_and_uploads_succeed_after_them_without_a_service_restart()
 {
    let cluster = RestartableCluster::from_env().unwrap();
    let load = LoadSettings {
        phones: 6,
        keys_per_upload: 14,
        before_restart: Duration::from_millis(500)..=Duration::from_millis(1500),
        after_last_restart: Duration::from_secs(1),
        // More than the pool holds: every pooled connection has been replaced or recycled.
        final_uploads: 10,
        pool_size: 4,
        ..LoadSettings::default()
    };
    let figures = upload_through_restarts(&cluster, 3, load).await.unwrap();
    println!("{figures}");

    assert_eq!(figures.restarts, 3, "{figures:?}");
    assert!(figures.acknowledged_uploads > 0, "{figures:?}");
    assert_eq!(
        figures.acknowledged_keys,
        figures.acknowledged_uploads * 14,
        "{figures:?}"
    );
    assert_eq!(figures.acknowledged_keys_lost, 0, "{figures:?}");
    assert_eq!(figures.requests_unanswered, 0, "{figures:?}");
    assert_eq!(figures.uploads_after_last_restart, 10, "{figures:?}");
    assert_eq!(figures.uploads_after_last_restart_ok, 10, "{figures:?}");
    assert_eq!(figures.violations(), Vec::<String>::new(), "{figures}");
}
