//! The keys a chaos run exports: whole synthetic cases (the benchmark's population,
//! [`crate::dataset`]) uploaded evenly over a span of closed hours, written with one binary
//! `COPY`, so that every pass has real work and the span holds complete UTC days (daily files
//! and the days' retrieval objects).

use crate::dataset::{Rng, copy_keys, population};

/// What was seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Rows written.
    pub keys: u64,
    /// Of them, keys whose publish hour is closed already (a key uploaded in the first two
    /// hours of a UTC day that expired at its midnight is held back to 02:00, DESIGN §2).
    pub publishable: u64,
    pub first_hour: i64,
    pub last_hour: i64,
}

/// Stores `keys` keys uploaded during the `hours` hours ending with `last_hour`, spread
/// evenly (the remainder in the last hour), each hour's keys whole cases diagnosed on its UTC
/// day.
pub async fn seed_keys(
    client: &tokio_postgres::Client,
    region: &str,
    keys: usize,
    hours: usize,
    last_hour: i64,
    seed: u64,
) -> anyhow::Result<Seeded> {
    let hours = hours.max(1);
    let span = i64::try_from(hours)?;
    let first_hour = last_hour - span + 1;
    let per_hour = keys / hours;
    let mut rng = Rng::new(seed);
    let rows = (first_hour..=last_hour).flat_map(move |hour| {
        let count = if hour == last_hour {
            keys - per_hour * (hours - 1)
        } else {
            per_hour
        };
        population(&mut rng, hour.div_euclid(24), count)
            .into_iter()
            .map(move |key| (hour, key))
    });
    let written = copy_keys(client, region, rows).await?;
    client.batch_execute("ANALYZE diagnosis_keys").await?;
    let publishable: i64 = client
        .query_one(
            "SELECT count(*) FROM diagnosis_keys WHERE region = $1 AND publish_hour <= $2",
            &[&region, &i32::try_from(last_hour)?],
        )
        .await?
        .get(0);
    Ok(Seeded {
        keys: written,
        publishable: u64::try_from(publishable)?,
        first_hour,
        last_hour,
    })
}
