//! `submit_secrets`: the submit service's own secrets (DESIGN §3.2), created on
//! first use and shared by every replica. The exporter never reads them.

use chrono::{DateTime, Utc};
use rand::RngExt;
use zeroize::Zeroizing;

use super::encryption_keys::ClaimCodeKey;
use super::failed_claims::ClientIdentityKey;
use super::{Store, StoreError};

/// The `submit_secrets` row that keys [`ClientIdentifier`](super::ClientIdentifier).
pub const CLIENT_IDENTITY_SECRET: &str = "client-identity";

/// The `submit_secrets` row that keys the hashes of claimed codes
/// ([`HashedCode`](super::HashedCode)). A secret of its own: the client
/// identifiers and the code hashes never share a key.
pub const CLAIM_CODE_SECRET: &str = "claim-code";

impl Store {
    /// The key of the client identifiers, created (32 random bytes) by the
    /// first replica that starts. The service loads it once at start.
    ///
    /// The insert does nothing when the row exists, so replicas starting at
    /// the same moment all end up reading the one secret that won.
    pub async fn client_identity_key(
        &self,
        now: DateTime<Utc>,
    ) -> Result<ClientIdentityKey, StoreError> {
        let secret = self.submit_secret(CLIENT_IDENTITY_SECRET, now).await?;
        ClientIdentityKey::from_secret(&secret)
            .ok_or(StoreError::InvalidRow("submit_secrets.secret"))
    }

    /// The key of the claimed codes' hashes, created (32 random bytes) by the
    /// first replica that asks for it, as [`Store::client_identity_key`] is.
    /// The service loads it once at start.
    pub async fn claim_code_key(&self, now: DateTime<Utc>) -> Result<ClaimCodeKey, StoreError> {
        let secret = self.submit_secret(CLAIM_CODE_SECRET, now).await?;
        ClaimCodeKey::from_secret(&secret).ok_or(StoreError::InvalidRow("submit_secrets.secret"))
    }

    async fn submit_secret(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let mut fresh = Zeroizing::new(vec![0_u8; ClientIdentityKey::MIN_SECRET_BYTES]);
        rand::rng().fill(&mut fresh[..]);
        client
            .execute(
                "INSERT INTO submit_secrets (name, secret, created) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &&fresh[..], &now],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT secret FROM submit_secrets WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(Zeroizing::new(row.try_get(0)?))
    }
}
