//! `encryption_keys`: one-time codes and the NaCl keypairs they unlock (DESIGN §3.1–§3.3).
//!
//! A row is born with a code (portal), loses the code and gains the app's public
//! key on claim (app), and serves uploads until its quota or validity ends.
//! Portal bearer tokens never reach this table: only their labels do, and of a
//! claimed code only its keyed hash ([`HashedCode`]), never the code itself.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_postgres::error::SqlState;

use super::events::{Event, append_event, append_otk_duration};
use super::failed_claims::{
    BanPolicy, ClientIdentifier, ClientIdentityKey, clear_failed_claims, count_failed_claim,
    lock_claim_attempts,
};
use super::{Store, StoreError, utc_date};
use crate::crypto::generate_server_keypair;
use crate::domain::{
    AppPublicKey, HashId, OneTimeCode, OriginatorLabel, Region, ServerPublicKey, ServerSecretKey,
};
use crate::redacted::Redacted;

/// What a portal asks for.
#[derive(Debug, Clone, Copy)]
pub struct NewCode<'a> {
    pub region: &'a Region,
    pub originator: &'a OriginatorLabel,
    pub hash_id: Option<&'a HashId>,
    pub initial_remaining_keys: i32,
    /// `CLAIM_RECOVERY_MINUTES` (DESIGN §3.1): how long after its claim a
    /// keypair that never received an upload is given back to its hash ID.
    pub claim_recovery: Duration,
}

/// The result of [`Store::issue_one_time_code`].
#[derive(Debug)]
pub enum IssueOutcome {
    /// A fresh code with a fresh keypair; `regenerated` when it replaced the
    /// earlier code of the same hash ID, and `recovered` when that code had
    /// been claimed and its unused keypair was given back (DESIGN §3.1).
    Issued {
        code: OneTimeCode,
        regenerated: bool,
        recovered: bool,
    },
    /// The hash ID's code was claimed and its keypair is not given back: the
    /// portal may not issue another.
    HashIdAlreadyClaimed,
    /// Every candidate code collided with an existing one; nothing was stored.
    CodeCollisions,
}

/// The result of [`Store::claim_one_time_code`].
#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(ServerPublicKey),
    /// The app key was bound by an earlier claim of the same code, which is
    /// still within its validity: the claim is answered again (DESIGN §3.2).
    Repeated(ServerPublicKey),
    /// The client is banned for this much longer; nothing was checked.
    Banned {
        remaining: Duration,
    },
    /// The app public key is already bound to another keypair.
    AppKeyAlreadyRegistered,
    /// Unknown, expired or already claimed code, counted against the client:
    /// `failures` is its count including this one.
    InvalidCode {
        failures: u32,
    },
}

/// What binding an app key to a code found, before the client's count is touched.
enum Binding {
    Bound(ServerPublicKey),
    Repeated(ServerPublicKey),
    AppKeyAlreadyRegistered,
    WrongCode,
}

/// What became of a hash ID's earlier code when a portal asked again.
enum Earlier {
    /// The hash ID had no code.
    None,
    /// An unclaimed code, deleted.
    Unclaimed,
    /// A code claimed more than `CLAIM_RECOVERY_MINUTES` ago whose keypair
    /// never received an upload, deleted with its keypair.
    Unused,
    /// A claimed code whose keypair is kept.
    Kept,
}

/// The key of the HMAC-SHA-256 that turns a claimed code into the hash its row
/// keeps (DESIGN §3.2). It lives in `submit_secrets`, shared by every replica
/// ([`Store::claim_code_key`]); an unkeyed hash of a code space this small
/// would be reversed by trying every code.
#[derive(Debug, Clone)]
pub struct ClaimCodeKey(Redacted<Hmac<Sha256>>);

impl ClaimCodeKey {
    /// A key from its secret bytes; `None` when the secret is shorter than the
    /// hash (as the `submit_secrets` table checks).
    pub fn from_secret(secret: &[u8]) -> Option<ClaimCodeKey> {
        if secret.len() < ClientIdentityKey::MIN_SECRET_BYTES {
            return None;
        }
        Hmac::<Sha256>::new_from_slice(secret)
            .ok()
            .map(|mac| ClaimCodeKey(Redacted::new(mac)))
    }
}

/// A code an app sent, with its keyed hash: what a claim stores in place of
/// the code, and what recognises the claim when the app repeats it.
#[derive(Debug, Clone)]
pub struct HashedCode {
    code: OneTimeCode,
    hash: Redacted<[u8; 32]>,
}

impl HashedCode {
    pub fn new(key: &ClaimCodeKey, code: OneTimeCode) -> HashedCode {
        let mut mac = key.0.expose().clone();
        mac.update(code.as_str().as_bytes());
        HashedCode {
            code,
            hash: Redacted::new(mac.finalize().into_bytes().into()),
        }
    }

    pub fn code(&self) -> &OneTimeCode {
        &self.code
    }

    /// HMAC-SHA-256(key, normalised code), as stored in `claimed_code_hash`.
    pub fn hash(&self) -> &[u8; 32] {
        self.hash.expose()
    }
}

/// How long a code may be claimed (DESIGN §3.2): while it is younger than the code expiry and
/// its keypair could still accept an upload, which counts from UTC midnight of the day the code
/// was issued. A code the keypair's validity has outrun is as good as expired: claiming it would
/// answer 200 with a server key no upload can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimWindow {
    /// `ONE_TIME_CODE_EXPIRY_MINUTES`.
    pub code_expiry: Duration,
    /// `ENCRYPTION_KEY_VALIDITY_DAYS`.
    pub keypair_validity_days: u32,
}

impl ClaimWindow {
    /// The codes (or claims, for a repeat) created after this instant may be claimed at `now`.
    fn claimable_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        // keypair_valid_since is inclusive; a nanosecond earlier makes it a strict bound.
        let keypair =
            keypair_valid_since(now, self.keypair_validity_days) - Duration::nanoseconds(1);
        (now - self.code_expiry).max(keypair)
    }
}

/// What an upload needs to open its box.
#[derive(Debug)]
pub struct UploadKeypair {
    pub server_secret: ServerSecretKey,
    pub app_public: AppPublicKey,
}

/// The earliest `created` instant whose keypair still accepts uploads: a keypair
/// is valid for `validity_days` from UTC midnight of the day its code was issued
/// (DESIGN §3.2), i.e. while `midnight(created) + validity_days > now`.
pub(super) fn keypair_valid_since(now: DateTime<Utc>, validity_days: u32) -> DateTime<Utc> {
    let limit = now - Duration::days(i64::from(validity_days));
    let midnight = limit
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(limit);
    midnight + Duration::days(1)
}

/// A new code and its server keypair; a code already taken inserts nothing (DESIGN §3.1: the
/// portal tries the next candidate).
const INSERT_CODE: &str = "INSERT INTO encryption_keys
         (region, originator, hash_id, one_time_code, server_public_key,
          server_private_key, remaining_keys, created)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (one_time_code) DO NOTHING";

impl Store {
    /// Issues a one-time code with a fresh server keypair, trying each code of
    /// `candidates` until one is not taken (DESIGN §3.1: at most five attempts,
    /// never an empty code). With a hash ID, its earlier code is replaced when
    /// it is unclaimed, or claimed long enough ago that its unused keypair is
    /// given back ([`release_earlier_code`]); otherwise the portal is refused.
    pub async fn issue_one_time_code(
        &self,
        new: &NewCode<'_>,
        now: DateTime<Utc>,
        candidates: impl IntoIterator<Item = OneTimeCode>,
    ) -> Result<IssueOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let earlier = match new.hash_id {
            Some(hash_id) => release_earlier_code(&tx, hash_id, now, new.claim_recovery).await?,
            None => Earlier::None,
        };
        let (regenerated, recovered) = match earlier {
            Earlier::None => (false, false),
            Earlier::Unclaimed => (true, false),
            Earlier::Unused => (true, true),
            Earlier::Kept => return Ok(IssueOutcome::HashIdAlreadyClaimed),
        };
        let (server_public, server_secret) = generate_server_keypair();
        let insert = tx.prepare_cached(INSERT_CODE).await?;
        for code in candidates {
            let inserted = tx
                .execute(
                    &insert,
                    &[
                        &new.region.as_str(),
                        &new.originator.as_str(),
                        &new.hash_id.map(HashId::as_str),
                        &code.as_str(),
                        &server_public.as_bytes().as_slice(),
                        &server_secret.as_bytes().as_slice(),
                        &new.initial_remaining_keys,
                        &now,
                    ],
                )
                .await?;
            if inserted == 1 {
                let event = if regenerated {
                    Event::OtkRegenerated
                } else {
                    Event::OtkGenerated
                };
                append_event(&tx, event, new.originator.as_str(), utc_date(now)).await?;
                tx.commit().await?;
                return Ok(IssueOutcome::Issued {
                    code,
                    regenerated,
                    recovered,
                });
            }
        }
        Ok(IssueOutcome::CodeCollisions)
    }

    /// Claims a code for an app key in one transaction (DESIGN §3.2), in the
    /// contract's order: a banned client is refused, then a registered app key,
    /// then a wrong code, which is counted against the client.
    ///
    /// The transaction first takes the client's claim lock
    /// ([`lock_claim_attempts`]), so the ban holds however many claims of one
    /// client run at once. Of two concurrent claims of one code exactly one
    /// wins: the row lock taken by the `UPDATE` makes the loser re-check
    /// `one_time_code`, which is then NULL.
    ///
    /// `code` is `None` when the typed code cannot be one of ours; the app key is
    /// still checked first, as the contract orders. A successful claim clears the
    /// client's failed attempts in the same transaction. A repeated claim
    /// (DESIGN §3.2) is answered with the keypair it bound and neither counts nor
    /// clears anything: clearing would let a client that holds one claimed code
    /// reset its count between guesses.
    pub async fn claim_one_time_code(
        &self,
        code: Option<&HashedCode>,
        app_public: &AppPublicKey,
        client: &ClientIdentifier,
        now: DateTime<Utc>,
        window: ClaimWindow,
        ban: BanPolicy,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if let Some(remaining) = lock_claim_attempts(&tx, client, now, ban).await? {
            return Ok(ClaimOutcome::Banned { remaining });
        }
        let claimable_after = window.claimable_after(now);
        match bind_app_key(&tx, code, app_public, now, claimable_after).await? {
            Binding::Bound(server_public) => {
                clear_failed_claims(&tx, client).await?;
                tx.commit().await?;
                Ok(ClaimOutcome::Claimed(server_public))
            }
            Binding::Repeated(server_public) => {
                tx.commit().await?;
                Ok(ClaimOutcome::Repeated(server_public))
            }
            // Rolled back: a registered app key is no failure.
            Binding::AppKeyAlreadyRegistered => Ok(ClaimOutcome::AppKeyAlreadyRegistered),
            Binding::WrongCode => {
                let failures = count_failed_claim(&tx, client, now, ban).await?;
                tx.commit().await?;
                Ok(ClaimOutcome::InvalidCode { failures })
            }
        }
    }
}

/// The keypair an upload is addressed to, locked for the rest of `tx`.
#[derive(Debug)]
pub(super) struct LockedKeypair {
    pub keypair: UploadKeypair,
    pub remaining_keys: i32,
    pub originator: String,
    /// The transaction that last wrote the keypair's row (its `xmin`): once the quota is
    /// spent, the upload that spent it.
    pub last_written_by: String,
}

/// Locks the keypair an upload is addressed to and reads everything the upload
/// needs from it, in one statement: the key that opens the box and the quota.
/// `None` when no claimed keypair with that server key is still valid.
pub(super) async fn lock_keypair_for_upload(
    tx: &deadpool_postgres::Transaction<'_>,
    server_public: &ServerPublicKey,
    now: DateTime<Utc>,
    validity_days: u32,
) -> Result<Option<LockedKeypair>, StoreError> {
    let statement = tx
        .prepare_cached(
            "SELECT server_private_key, app_public_key, remaining_keys, originator, xmin::text
               FROM encryption_keys
              WHERE server_public_key = $1 AND app_public_key IS NOT NULL AND created >= $2
                FOR UPDATE",
        )
        .await?;
    let row = tx
        .query_opt(
            &statement,
            &[
                &server_public.as_bytes().as_slice(),
                &keypair_valid_since(now, validity_days),
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let server_secret = ServerSecretKey::try_from(row.try_get::<_, &[u8]>(0)?)
        .map_err(|_| StoreError::InvalidRow("encryption_keys.server_private_key"))?;
    let app_public = AppPublicKey::try_from(row.try_get::<_, &[u8]>(1)?)
        .map_err(|_| StoreError::InvalidRow("encryption_keys.app_public_key"))?;
    Ok(Some(LockedKeypair {
        keypair: UploadKeypair {
            server_secret,
            app_public,
        },
        remaining_keys: row.try_get(2)?,
        originator: row.try_get(3)?,
        last_written_by: row.try_get(4)?,
    }))
}

/// Decides a hash ID's earlier code under its row's lock (DESIGN §3.1), so that
/// a claim of that code and this regenerate have one winner: a claim that locked
/// the row first has ended by the time it is read here (and a code it claimed
/// is kept), and a claim that comes second finds the row gone. An upload locks
/// the row too, so a keypair is never given back while its first upload
/// commits. The advisory lock keeps two portal calls for a hash ID without a row
/// from both inserting one.
async fn release_earlier_code(
    tx: &deadpool_postgres::Transaction<'_>,
    hash_id: &HashId,
    now: DateTime<Utc>,
    claim_recovery: Duration,
) -> Result<Earlier, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&hash_id.as_str()],
    )
    .await?;
    let row = tx
        .query_opt(
            "SELECT id, claimed, uploaded FROM encryption_keys WHERE hash_id = $1 FOR UPDATE",
            &[&hash_id.as_str()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Earlier::None);
    };
    let id: i64 = row.try_get(0)?;
    let claimed: Option<DateTime<Utc>> = row.try_get(1)?;
    let uploaded: bool = row.try_get(2)?;
    let earlier = match claimed {
        None => Earlier::Unclaimed,
        Some(at) if !uploaded && at < now - claim_recovery => Earlier::Unused,
        Some(_) => return Ok(Earlier::Kept),
    };
    tx.execute("DELETE FROM encryption_keys WHERE id = $1", &[&id])
        .await?;
    Ok(earlier)
}

/// Binds the app key to the code's keypair and records the claim's events;
/// the caller commits.
async fn bind_app_key(
    tx: &deadpool_postgres::Transaction<'_>,
    code: Option<&HashedCode>,
    app_public: &AppPublicKey,
    now: DateTime<Utc>,
    claimable_after: DateTime<Utc>,
) -> Result<Binding, StoreError> {
    if let Some(registered) = registered_app_key(tx, code, app_public, now, claimable_after).await?
    {
        return Ok(registered);
    }
    let Some(code) = code else {
        return Ok(Binding::WrongCode);
    };
    let claimed = tx
        .query_opt(
            "UPDATE encryption_keys
                SET one_time_code = NULL, app_public_key = $2, claimed = $3,
                    claimed_code_hash = $5
              WHERE one_time_code = $1 AND created > $4
          RETURNING server_public_key, originator, created",
            &[
                &code.code().as_str(),
                &app_public.as_bytes().as_slice(),
                &now,
                &claimable_after,
                &code.hash().as_slice(),
            ],
        )
        .await;
    let row = match claimed {
        Ok(Some(row)) => row,
        Ok(None) => return repeat_or_wrong_code(tx, code, app_public, now, claimable_after).await,
        // A concurrent claim bound the same app key to another code first.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Ok(Binding::AppKeyAlreadyRegistered);
        }
        Err(e) => return Err(e.into()),
    };
    let server_public = ServerPublicKey::try_from(row.try_get::<_, &[u8]>(0)?)
        .map_err(|_| StoreError::InvalidRow("encryption_keys.server_public_key"))?;
    let originator: String = row.try_get(1)?;
    let created: DateTime<Utc> = row.try_get(2)?;
    let today = utc_date(now);
    let hours = i32::try_from((now - created).num_hours().max(0)).unwrap_or(i32::MAX);
    futures::try_join!(
        append_event(tx, Event::OtkClaimed, &originator, today),
        append_otk_duration(tx, &originator, today, hours),
    )?;
    Ok(Binding::Bound(server_public))
}

/// The answer to a claim that found no code to bind: the code may have been bound while the
/// claim waited for its row, by the same app's other claim (a retry from another address),
/// which this one then repeats; a new statement sees it now that it has committed (DESIGN
/// §3.2). Anything else is a wrong code.
async fn repeat_or_wrong_code(
    tx: &deadpool_postgres::Transaction<'_>,
    code: &HashedCode,
    app_public: &AppPublicKey,
    now: DateTime<Utc>,
    claimable_after: DateTime<Utc>,
) -> Result<Binding, StoreError> {
    let registered = registered_app_key(tx, Some(code), app_public, now, claimable_after).await?;
    Ok(match registered {
        Some(repeat @ Binding::Repeated(_)) => repeat,
        _ => Binding::WrongCode,
    })
}

/// Whether the app key already holds a keypair: `None` when it does not, a
/// repeat when the claim that bound it was of the same code and that code would
/// still be valid (DESIGN §3.2), and a refusal otherwise. The row stays locked
/// for the rest of `tx`, so a repeat and a regenerate that would give the
/// keypair back (DESIGN §3.1) have one winner.
async fn registered_app_key(
    tx: &deadpool_postgres::Transaction<'_>,
    code: Option<&HashedCode>,
    app_public: &AppPublicKey,
    now: DateTime<Utc>,
    claimable_after: DateTime<Utc>,
) -> Result<Option<Binding>, StoreError> {
    let app_key = app_public.as_bytes().as_slice();
    let row = tx
        .query_opt(
            "SELECT server_public_key, coalesce(claimed_code_hash = $2 AND created > $3, false)
               FROM encryption_keys
              WHERE app_public_key = $1
                FOR UPDATE",
            &[
                &app_key,
                &code.map(|code| code.hash().as_slice()),
                &claimable_after,
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    if !row.try_get::<_, bool>(1)? {
        return Ok(Some(Binding::AppKeyAlreadyRegistered));
    }
    // The app has now heard its answer: the recovery window starts afresh, so a
    // portal cannot give the keypair back just after the app was told it. A keypair
    // that has uploaded is never given back, and its row is left as the upload wrote
    // it: the repeat of an upload that spent the quota is recognised by the row's
    // writer (DESIGN §3.3), which a rewrite here would change.
    tx.execute(
        "UPDATE encryption_keys SET claimed = greatest(claimed, $2)
          WHERE app_public_key = $1 AND NOT uploaded",
        &[&app_key, &now],
    )
    .await?;
    let server_public = ServerPublicKey::try_from(row.try_get::<_, &[u8]>(0)?)
        .map_err(|_| StoreError::InvalidRow("encryption_keys.server_public_key"))?;
    Ok(Some(Binding::Repeated(server_public)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_code_hash_is_keyed_redacted_and_needs_a_full_length_secret() {
        let code = OneTimeCode::from_user_input("AEF-245-HJKL").unwrap();
        let key = ClaimCodeKey::from_secret(&[1; 32]).unwrap();
        let hashed = HashedCode::new(&key, code.clone());
        let expected = {
            let mut mac = Hmac::<Sha256>::new_from_slice(&[1; 32]).unwrap();
            mac.update(b"AEF245HJKL");
            mac.finalize().into_bytes()
        };
        assert_eq!(hashed.hash().as_slice(), expected.as_slice());
        let other = ClaimCodeKey::from_secret(&[2; 32]).unwrap();
        assert_ne!(HashedCode::new(&other, code).hash(), hashed.hash());
        assert_eq!(
            format!("{hashed:?}"),
            "HashedCode { code: OneTimeCode(..), hash: .. }"
        );
        assert_eq!(format!("{key:?}"), "ClaimCodeKey(..)");
        assert!(ClaimCodeKey::from_secret(&[1; 31]).is_none());
    }

    #[test]
    fn keypair_validity_counts_from_midnight_of_issue_day() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 15, 30, 0).unwrap();
        // Valid while midnight(created) + 15 days > now: issued on 2026-11-14 it is
        // valid until 2026-11-29 00:00; issued on 2026-11-13 it ended 11-28 00:00.
        let since = keypair_valid_since(now, 15);
        assert_eq!(since, Utc.with_ymd_and_hms(2026, 11, 14, 0, 0, 0).unwrap());
        let midnight = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        assert_eq!(
            keypair_valid_since(midnight, 15),
            Utc.with_ymd_and_hms(2026, 11, 14, 0, 0, 0).unwrap()
        );
    }
}
