//! Login users of the least-privilege database roles (DESIGN §7), as an operator creates them.
//!
//! The migrations create the NOLOGIN group roles `diagnosis_submit` and `diagnosis_exporter`
//! and grant to them; an operator runs each binary as a LOGIN user that is a member of one. Roles
//! belong to the whole cluster, so every user made here has a random name of its own, and tests
//! running side by side never share one. They are not dropped: the test cluster is thrown away.

use diagnosis_core::store::{Store, StoreConfig};
use std::time::Duration;

use crate::pg::TestDatabase;

/// The submit service's group role (`sql/V4__roles.sql`).
pub const SUBMIT_ROLE: &str = "diagnosis_submit";
/// The exporter's group role (`sql/V4__roles.sql`).
pub const EXPORTER_ROLE: &str = "diagnosis_exporter";

/// A LOGIN user that holds one group role's privileges and nothing else.
pub struct RoleUser {
    /// The user's name, `<prefix>_<random>`.
    pub name: String,
    /// The test database, reached as this user (e.g. a binary's `DATABASE_URL`).
    pub url: String,
}

impl std::fmt::Debug for RoleUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RoleUser {
    /// Creates a user in `group` (one of [`SUBMIT_ROLE`], [`EXPORTER_ROLE`]) that reaches `db`.
    ///
    /// # Panics
    /// When the user cannot be created, e.g. because the migrations did not create the role.
    pub async fn create(db: &TestDatabase, group: &str) -> RoleUser {
        let prefix = group.trim_start_matches("diagnosis_");
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let password = format!("{:032x}", rand::random::<u128>());
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {group}"
            ))
            .await
            .unwrap_or_else(|err| panic!("cannot create a login user in {group}: {err}"));
        let url = with_user(&db.url, &name, &password);
        RoleUser { name, url }
    }

    /// A store connected as this user the way the binaries connect (`Store::connect`).
    pub fn store(&self) -> Store {
        Store::connect(&StoreConfig {
            database_url: self.url.clone(),
            pool_size: 4,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            application_name: "diagnosis-tests",
        })
        .unwrap_or_else(|err| panic!("cannot build a pool for {}: {err}", self.name))
    }

    /// One connection as this user, outside any pool (for statements that must be refused).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| panic!("cannot connect as {}: {err}", self.name));
        tokio::spawn(connection);
        client
    }
}

/// `url` with its user and password replaced (host, database and parameters kept).
fn with_user(url: &str, user: &str, password: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let (scheme, rest) = url.split_at(authority_start);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}{user}:{password}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_user_replaces_only_the_credentials() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/test_1",
                "postgres://u:p@127.0.0.1:5432/test_1",
            ),
            (
                "postgres://a:b@h/db?sslmode=disable",
                "postgres://u:p@h/db?sslmode=disable",
            ),
            ("postgresql://h:1/db", "postgresql://u:p@h:1/db"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_user(url, "u", "p"), expected, "{url}");
        }
    }
}
