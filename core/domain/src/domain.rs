//! Domain values of Diagnosis Server: plain Rust types that carry the rules of DESIGN §3 and §7.
//!
//! Every type here has private fields and is built only through `parse`, `TryFrom` or a
//! generator, so holding one is proof that the value passed its checks. Nothing here speaks
//! protobuf, touches the database or does I/O.
//!
//! Privacy (DESIGN §7): codes, tokens, keys and hash IDs are personal or secret data. They hold
//! their value in a [`Redacted`], so their derived `Debug` reads `Name(..)`, and they have no
//! `Display`, so they can never reach a log line through `{}` or `{:?}`. The few places that
//! must send or store the raw value call the explicit accessor (`as_str`, `as_bytes`). Nothing
//! in this module may ever print one.

use std::fmt;

use rand::RngExt as _;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};
use thiserror::Error;
use zeroize::Zeroize as _;

use crate::redacted::Redacted;
use crate::time;

/// A byte string did not have the length its type requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("expected {expected} bytes, got {actual}")]
pub struct InvalidLength {
    /// The length the type requires.
    pub expected: usize,
    /// The length that was presented.
    pub actual: usize,
}

fn fixed_bytes<const N: usize>(bytes: &[u8]) -> Result<[u8; N], InvalidLength> {
    <[u8; N]>::try_from(bytes).map_err(|_| InvalidLength {
        expected: N,
        actual: bytes.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// Temporary exposure key data
// ---------------------------------------------------------------------------------------------

/// The 16 bytes of a Temporary Exposure Key (DESIGN §3, `TemporaryExposureKey.key_data`).
///
/// `Ord` is the byte order, the last component of the canonical export order (DESIGN §4.1).
/// A diagnosis key identifies an infected person's phone until it is published, so `Debug`
/// shows none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyData(Redacted<[u8; 16]>);

impl KeyData {
    /// Wraps 16 bytes that are already known to be key data (generated, or read from the database).
    pub const fn from_array(bytes: [u8; 16]) -> Self {
        Self(Redacted::new(bytes))
    }

    /// The raw key bytes, for storage and export only.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        self.0.expose()
    }
}

impl TryFrom<&[u8]> for KeyData {
    type Error = InvalidLength;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        fixed_bytes(bytes).map(Self::from_array)
    }
}

// ---------------------------------------------------------------------------------------------
// One-time codes
// ---------------------------------------------------------------------------------------------

/// Letters a one-time code segment may use: no vowels that spell words, nothing that reads as
/// a digit (DESIGN §3.1).
const CODE_LETTERS: &[u8] = b"AEFHJKLQRSUWXYZ";
/// Digits a one-time code segment may use: no 0/1/3 that read as letters (DESIGN §3.1).
const CODE_DIGITS: &[u8] = b"2456789";
/// A code is 10 characters in segments of 3, 3 and 4 (DESIGN §3.1).
const CODE_SEGMENTS: [std::ops::Range<usize>; 3] = [0..3, 3..6, 6..10];
const CODE_LEN: usize = 10;

/// The 10-character code a health portal hands to a patient, who types it into the app
/// (DESIGN §3.1, §3.2).
///
/// `Debug` and `Display` never show the code; [`OneTimeCode::as_str`] is for the one response
/// that delivers it and the one query that looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeCode(Redacted<String>);

impl OneTimeCode {
    /// Normalises what a person typed (DESIGN §3.2: strip spaces and `-`, upper-case) and
    /// accepts it only if it has the shape of an issued code.
    pub fn from_user_input(input: &str) -> Option<Self> {
        // Anything this long cannot normalise to 10 characters without being mostly
        // separators; refusing early bounds the work done on hostile input.
        if input.len() > 64 {
            return None;
        }
        let normalised: String = input
            .chars()
            .filter(|c| *c != ' ' && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normalised.len() != CODE_LEN {
            return None;
        }
        let bytes = normalised.as_bytes();
        let well_formed = CODE_SEGMENTS.iter().all(|range| {
            bytes.get(range.clone()).is_some_and(|segment| {
                segment.iter().all(|b| CODE_LETTERS.contains(b))
                    || segment.iter().all(|b| CODE_DIGITS.contains(b))
            })
        });
        well_formed.then_some(Self(Redacted::new(normalised)))
    }

    /// Issues a fresh code (DESIGN §3.1): each segment independently is all letters or all
    /// digits on a fair coin, every character drawn uniformly from its alphabet, all from a
    /// cryptographically secure generator (the thread-local ChaCha generator seeded by the OS).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut code = String::with_capacity(CODE_LEN);
        for range in CODE_SEGMENTS {
            let alphabet = if rng.random_bool(0.5) {
                CODE_LETTERS
            } else {
                CODE_DIGITS
            };
            for _ in range {
                let index = rng.random_range(0..alphabet.len());
                code.extend(alphabet.get(index).map(|b| char::from(*b)));
            }
        }
        Self(Redacted::new(code))
    }

    /// The normalised code, for the response that delivers it and the database lookup only.
    pub fn as_str(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Display for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted one-time code]")
    }
}

// ---------------------------------------------------------------------------------------------
// Health-portal values
// ---------------------------------------------------------------------------------------------

/// A health portal's hash of a patient record, from `POST /new-key-claim/{hashID}`
/// (DESIGN §3.1): exactly 128 characters of `[0-9a-z]`.
///
/// It is tied to one patient, so `Debug` is redacted and there is no `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashId(Redacted<String>);

impl HashId {
    /// Length of every hash ID (DESIGN §3.1).
    pub const LEN: usize = 128;

    /// Accepts exactly 128 characters of `[0-9a-z]`; anything else is not a hash ID (→ 404).
    pub fn parse(input: &str) -> Option<Self> {
        let well_formed = input.len() == Self::LEN
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        well_formed.then(|| Self(Redacted::new(input.to_owned())))
    }

    /// The hash ID, for the database only.
    pub fn as_str(&self) -> &str {
        self.0.expose()
    }
}

/// The label of a health portal, such as a province (`ON`), configured next to its bearer
/// token in `KEY_CLAIM_TOKEN` (DESIGN §3.1). The database stores the label, never the token.
///
/// Labels are not secret: they appear in events and metrics, so `Display` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginatorLabel(String);

impl OriginatorLabel {
    /// Longest label accepted (DESIGN §3.1).
    pub const MAX_LEN: usize = 31;

    /// Accepts 1 to 31 characters of printable ASCII (space through `~`) other than `=` and
    /// `:`, which separate entries in `KEY_CLAIM_TOKEN`.
    pub fn parse(input: &str) -> Option<Self> {
        let well_formed = (1..=Self::MAX_LEN).contains(&input.len())
            && input
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'=' && b != b':');
        well_formed.then(|| Self(input.to_owned()))
    }

    /// The label, for storage and metrics.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OriginatorLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A health portal's secret bearer token (DESIGN §3.1): 20 to 63 characters of printable ASCII
/// other than whitespace, `:` and `=`.
///
/// `Debug` is redacted and there is no `Display` and no accessor: the only thing a token is
/// good for is [`KeyClaimTokens::authenticate`].
#[derive(Debug, Clone)]
pub struct BearerToken(Redacted<String>);

impl BearerToken {
    /// Shortest token accepted (DESIGN §3.1).
    pub const MIN_LEN: usize = 20;
    /// Longest token accepted (DESIGN §3.1).
    pub const MAX_LEN: usize = 63;

    /// Accepts a token of the shape DESIGN §3.1 allows.
    pub fn parse(input: &str) -> Option<Self> {
        let well_formed = (Self::MIN_LEN..=Self::MAX_LEN).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b':' && b != b'=');
        well_formed.then(|| Self(Redacted::new(input.to_owned())))
    }
}

impl Drop for BearerToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Room for any configured token plus one byte, so a longer presented token never matches.
const TOKEN_BUFFER_LEN: usize = BearerToken::MAX_LEN + 1;

/// Copies a token into a fixed-size buffer so that comparisons take the same time whatever
/// its length.
fn token_buffer(token: &[u8]) -> [u8; TOKEN_BUFFER_LEN] {
    let mut buffer = [0_u8; TOKEN_BUFFER_LEN];
    for (slot, byte) in buffer.iter_mut().zip(token) {
        *slot = *byte;
    }
    buffer
}

/// The portals allowed to request one-time codes: the parsed `KEY_CLAIM_TOKEN`,
/// `token=label[:token=label…]` (DESIGN §3.1).
///
/// `Debug` shows the labels, which are public, and never a token.
#[derive(Debug, Clone)]
pub struct KeyClaimTokens {
    entries: Vec<(BearerToken, OriginatorLabel)>,
}

impl KeyClaimTokens {
    /// Parses `token=label[:token=label…]`. Surrounding whitespace of the whole value is
    /// ignored. Errors name the entry (1-based) and what is wrong with it, and never contain
    /// the token.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("no token=label entries".to_owned());
        }
        let mut entries: Vec<(BearerToken, OriginatorLabel)> = Vec::new();
        for (index, entry) in input.split(':').enumerate() {
            let number = index + 1;
            let Some((token, label)) = entry.split_once('=') else {
                return Err(format!("entry {number} is not of the form token=label"));
            };
            let Some(token) = BearerToken::parse(token) else {
                return Err(format!(
                    "entry {number}: the token must be {}–{} printable ASCII characters \
                     without whitespace, ':' or '='",
                    BearerToken::MIN_LEN,
                    BearerToken::MAX_LEN
                ));
            };
            let Some(label) = OriginatorLabel::parse(label) else {
                return Err(format!(
                    "entry {number}: the label must be 1–{} printable ASCII characters \
                     without ':' or '='",
                    OriginatorLabel::MAX_LEN
                ));
            };
            if let Some(earlier) = entries.iter().position(|(known, _)| known.0 == token.0) {
                // Configuration, not a request: an ordinary comparison is fine here.
                return Err(format!(
                    "entry {number} repeats the token of entry {}",
                    earlier + 1
                ));
            }
            entries.push((token, label));
        }
        Ok(Self { entries })
    }

    /// Returns the label of the portal whose token was presented, or `None`.
    ///
    /// DESIGN §3.1 and §7 require a constant-time check. Every configured token is compared,
    /// whatever matched before; each comparison runs over a fixed-size buffer plus the
    /// length, so neither the position of the matching token nor the lengths of the
    /// configured tokens show in the timing. Only the final yes/no branches.
    pub fn authenticate(&self, presented: &str) -> Option<&OriginatorLabel> {
        let presented = presented.as_bytes();
        let mut presented_buffer = token_buffer(presented);
        let presented_len = presented.len() as u64;

        let mut found = subtle::Choice::from(0);
        let mut found_index = 0_u64;
        for (index, (token, _)) in self.entries.iter().enumerate() {
            let mut configured_buffer = token_buffer(token.0.expose().as_bytes());
            let equal = presented_buffer.ct_eq(&configured_buffer)
                & presented_len.ct_eq(&(token.0.expose().len() as u64));
            found_index.conditional_assign(&(index as u64), equal);
            found |= equal;
            configured_buffer.zeroize();
        }
        presented_buffer.zeroize();

        if bool::from(found) {
            let index = usize::try_from(found_index).ok()?;
            self.entries.get(index).map(|(_, label)| label)
        } else {
            None
        }
    }

    /// Number of configured portals.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no portal is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The default of `REGION` (DESIGN §6): the region the submit service issues codes for and
/// stores keys under, which the exporter reads them from. It is the mobile country code (MCC)
/// the apps in the field send, so it is also the default of the apps' `retrieve/{MCC}/...` path
/// (`COMPAT_REGION_PATH`).
pub const DEFAULT_REGION: &str = "302";

/// The default of `EXPORT_REGION` (DESIGN §6): the region written into every export file and
/// the first segment of the object keys the exporter publishes (`CA/index.txt`).
pub const DEFAULT_EXPORT_REGION: &str = "CA";

/// The region a code is issued for (`REGION`, default [`DEFAULT_REGION`], DESIGN §6) or an
/// export region (`EXPORT_REGION`, default [`DEFAULT_EXPORT_REGION`]): 1 to 16 characters of
/// `[A-Za-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    /// Longest region accepted.
    pub const MAX_LEN: usize = 16;

    /// Accepts 1 to 16 characters of `[A-Za-z0-9_]`; the value is used in object keys and
    /// file names, so nothing else is allowed.
    pub fn parse(input: &str) -> Option<Self> {
        let well_formed = (1..=Self::MAX_LEN).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        well_formed.then(|| Self(input.to_owned()))
    }

    /// The region code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// NaCl keys (DESIGN §3.1–§3.3)
// ---------------------------------------------------------------------------------------------

/// The Curve25519 public key an app registers when it claims a code (DESIGN §3.2).
///
/// It identifies one user's device for the life of the keypair, so `Debug` shows none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppPublicKey(Redacted<[u8; 32]>);

impl AppPublicKey {
    /// Wraps 32 bytes already known to be an app public key (read from the database).
    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Self(Redacted::new(bytes))
    }

    /// The raw key, for storage and the box only.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl TryFrom<&[u8]> for AppPublicKey {
    type Error = InvalidLength;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        fixed_bytes(bytes).map(Self::from_array)
    }
}

/// The per-code Curve25519 public key the server hands out on claim (DESIGN §3.1, §3.2).
///
/// It names one claimed code, and thereby one patient's uploads, so `Debug` shows none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerPublicKey(Redacted<[u8; 32]>);

impl ServerPublicKey {
    /// Wraps 32 bytes already known to be a server public key (generated, or from the database).
    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Self(Redacted::new(bytes))
    }

    /// The raw key, for storage, the claim response and the box only.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl TryFrom<&[u8]> for ServerPublicKey {
    type Error = InvalidLength;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        fixed_bytes(bytes).map(Self::from_array)
    }
}

/// The per-code Curve25519 secret key that opens a patient's upload (DESIGN §3.3).
///
/// Wiped from memory on drop; `Debug` is redacted; no equality, so it is never compared in
/// variable time.
#[derive(Debug, Clone)]
pub struct ServerSecretKey(Redacted<[u8; 32]>);

impl ServerSecretKey {
    /// Wraps 32 bytes already known to be a server secret key (generated, or from the database).
    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Self(Redacted::new(bytes))
    }

    /// The raw key, for storage and the box only.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl TryFrom<&[u8]> for ServerSecretKey {
    type Error = InvalidLength;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        fixed_bytes(bytes).map(Self::from_array)
    }
}

impl Drop for ServerSecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

// ---------------------------------------------------------------------------------------------
// Diagnosis keys
// ---------------------------------------------------------------------------------------------

/// How a diagnosis was reached (DESIGN §3, `ReportType`).
///
/// `UNKNOWN` (0) has no variant: it is never stored, because an absent or unknown report type
/// is recorded as [`ReportType::ConfirmedTest`] at upload (DESIGN §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportType {
    /// `CONFIRMED_TEST` (1).
    ConfirmedTest,
    /// `CONFIRMED_CLINICAL_DIAGNOSIS` (2).
    ConfirmedClinicalDiagnosis,
    /// `SELF_REPORT` (3).
    SelfReport,
    /// `RECURSIVE` (4).
    Recursive,
    /// `REVOKED` (5).
    Revoked,
}

impl ReportType {
    /// The wire and database number.
    pub const fn as_i32(self) -> i32 {
        match self {
            Self::ConfirmedTest => 1,
            Self::ConfirmedClinicalDiagnosis => 2,
            Self::SelfReport => 3,
            Self::Recursive => 4,
            Self::Revoked => 5,
        }
    }

    /// The report type with this number; `None` for `UNKNOWN` (0) and numbers the protocol
    /// does not define.
    pub const fn from_i32(value: i32) -> Option<Self> {
        match value {
            1 => Some(Self::ConfirmedTest),
            2 => Some(Self::ConfirmedClinicalDiagnosis),
            3 => Some(Self::SelfReport),
            4 => Some(Self::Recursive),
            5 => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// A diagnosis key as it is stored and exported: built only by upload validation
/// ([`crate::upload::validate_upload`]) or from a database row.
///
/// `Debug` shows the metadata but not the key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisKey {
    /// The 16 key bytes.
    pub key_data: KeyData,
    /// EN interval number (DESIGN §2) at which the key became valid.
    pub rolling_start_interval_number: i32,
    /// Number of intervals the key is valid for, 1..=144.
    pub rolling_period: i32,
    /// Transmission risk level, 0..=8.
    pub transmission_risk_level: i32,
    /// How the diagnosis was reached.
    pub report_type: ReportType,
    /// Days since onset of symptoms, −14..=14, or unknown.
    pub days_since_onset: Option<i32>,
}

impl DiagnosisKey {
    /// The canonical key order of DESIGN §4.1: rolling_start_interval_number, rolling_period,
    /// transmission_risk_level, report_type, days_since_onset (unknown first), key_data.
    ///
    /// Grouping identical metadata is what lets deflate compress everything but the 16 random
    /// key bytes, and the order says nothing about which keys were uploaded together.
    pub fn canonical_cmp(&self, other: &DiagnosisKey) -> std::cmp::Ordering {
        self.rolling_start_interval_number
            .cmp(&other.rolling_start_interval_number)
            .then(self.rolling_period.cmp(&other.rolling_period))
            .then(
                self.transmission_risk_level
                    .cmp(&other.transmission_risk_level),
            )
            .then(self.report_type.as_i32().cmp(&other.report_type.as_i32()))
            // `None < Some(_)` for `Option`, which is "unknown first".
            .then(self.days_since_onset.cmp(&other.days_since_onset))
            .then(self.key_data.cmp(&other.key_data))
    }

    /// Unix second at which the key stops being valid (DESIGN §2).
    pub fn expiry_unix(&self) -> i64 {
        time::key_expiry(self.rolling_start_interval_number, self.rolling_period)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_data_accepts_exactly_16_bytes() {
        fn check(input: &[u8], expected: Result<[u8; 16], InvalidLength>) {
            let actual = KeyData::try_from(input).map(|key| *key.as_bytes());
            assert_eq!(actual, expected, "input length {}", input.len());
        }
        check(&[7; 16], Ok([7; 16]));
        check(
            &[],
            Err(InvalidLength {
                expected: 16,
                actual: 0,
            }),
        );
        check(
            &[7; 15],
            Err(InvalidLength {
                expected: 16,
                actual: 15,
            }),
        );
        check(
            &[7; 17],
            Err(InvalidLength {
                expected: 16,
                actual: 17,
            }),
        );
        assert_eq!(KeyData::from_array([3; 16]).as_bytes(), &[3; 16]);
    }

    #[test]
    fn secrets_and_personal_data_are_redacted() {
        fn check(rendered: String, secret: &str) {
            assert!(
                !rendered.contains(secret),
                "{rendered:?} reveals {secret:?}"
            );
        }
        let key = KeyData::from_array([0xab; 16]);
        assert_eq!(format!("{key:?}"), "KeyData(..)");
        check(format!("{key:?}"), "ab");
        check(format!("{key:?}"), "171");

        let code = OneTimeCode::from_user_input("AEF-245-HJKL").unwrap();
        check(format!("{code:?}"), "AEF");
        check(format!("{code}"), "AEF");
        check(format!("{code}"), "245");

        let hash = HashId::parse(&"a".repeat(128)).unwrap();
        check(format!("{hash:?}"), "aaaa");

        let tokens = KeyClaimTokens::parse("sekrit-token-0123456789=ON").unwrap();
        check(format!("{tokens:?}"), "sekrit");
        assert!(format!("{tokens:?}").contains("ON"));
        check(
            format!(
                "{:?}",
                BearerToken::parse("sekrit-token-0123456789").unwrap()
            ),
            "sekrit",
        );

        check(format!("{:?}", AppPublicKey::from_array([0xcd; 32])), "cd");
        check(
            format!("{:?}", ServerPublicKey::from_array([0xcd; 32])),
            "cd",
        );
        check(
            format!("{:?}", ServerSecretKey::from_array([0xcd; 32])),
            "cd",
        );
        check(
            format!("{:?}", ServerSecretKey::from_array([0xcd; 32])),
            "205",
        );

        let diagnosis_key = DiagnosisKey {
            key_data: key,
            rolling_start_interval_number: 2_833_056,
            rolling_period: 144,
            transmission_risk_level: 1,
            report_type: ReportType::ConfirmedTest,
            days_since_onset: None,
        };
        check(format!("{diagnosis_key:?}"), "171");
        assert!(format!("{diagnosis_key:?}").contains("KeyData(..)"));
    }

    #[test]
    fn one_time_code_normalises_user_input() {
        fn check(input: &str, expected: Option<&str>) {
            let actual = OneTimeCode::from_user_input(input);
            assert_eq!(
                actual.as_ref().map(OneTimeCode::as_str),
                expected,
                "input {input:?}"
            );
        }
        // Every combination of segment kinds.
        check("AEFHJKLQRS", Some("AEFHJKLQRS"));
        check("2456789245", Some("2456789245"));
        check("AEF245HJKL", Some("AEF245HJKL"));
        check("245AEF7896", Some("245AEF7896"));
        check("245789HJKL", Some("245789HJKL"));
        check("AEFHJK2456", Some("AEFHJK2456"));
        // Normalisation: case, dashes, spaces.
        check("aef-245-hjkl", Some("AEF245HJKL"));
        check("aef 245 hjkl", Some("AEF245HJKL"));
        check(" Aef - 245 -hjKL ", Some("AEF245HJKL"));
        check("--uwx--yzq--2222-", Some("UWXYZQ2222"));
        // Wrong length.
        check("", None);
        check("AEF245HJK", None);
        check("AEF245HJKLL", None);
        check("AEF-245-HJKL-2", None);
        // Mixed segments, even when the alphabets are right.
        check("A2FHJKLQRS", None);
        check("AEF245HJK2", None);
        check("AEF2A5HJKL", None);
        // Characters outside the alphabets.
        check("ABC245HJKL", None); // B
        check("AEF123HJKL", None); // 1, 3
        check("AEF240HJKL", None); // 0
        check("OIL245HJKL", None);
        check("AEF_245HJKL", None);
        check("AEF\t245HJKL", None); // only spaces and dashes are stripped
        // Non-ASCII never passes, even if it upper-cases to something else.
        check("äef245hjkl", None);
        check("ＡＥＦ245HJKL", None);
        // Hostile lengths.
        check(&"-".repeat(100_000), None);
        check(&format!("AEF245HJKL{}", " ".repeat(100)), None);
    }

    #[test]
    fn generated_codes_are_well_formed_and_cover_every_segment_kind() {
        let mut kinds = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for _ in 0..1000 {
            let code = OneTimeCode::generate();
            assert_eq!(code.as_str().len(), CODE_LEN);
            let reparsed = OneTimeCode::from_user_input(code.as_str());
            assert_eq!(reparsed.as_ref(), Some(&code));
            let lower = code.as_str().to_ascii_lowercase();
            let dashed = format!("{}-{}-{}", &lower[0..3], &lower[3..6], &lower[6..10]);
            assert_eq!(OneTimeCode::from_user_input(&dashed).as_ref(), Some(&code));

            let bytes = code.as_str().as_bytes();
            let kind: Vec<bool> = CODE_SEGMENTS
                .iter()
                .map(|range| {
                    bytes[range.clone()]
                        .iter()
                        .all(|b| CODE_LETTERS.contains(b))
                })
                .collect();
            kinds.insert(kind);
            codes.insert(code.as_str().to_owned());
        }
        // 3 segments, each letters or digits: 8 kinds, each with probability 1/8.
        assert_eq!(kinds.len(), 8, "segment kinds seen: {kinds:?}");
        // The smallest code space (all digits) has 7^10 codes; repeats in 1000 are rare.
        assert!(codes.len() > 990, "only {} distinct codes", codes.len());
    }

    #[test]
    fn generated_code_characters_cover_both_alphabets() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            seen.extend(OneTimeCode::generate().as_str().bytes());
        }
        let mut expected: Vec<u8> = CODE_LETTERS.iter().chain(CODE_DIGITS).copied().collect();
        expected.sort_unstable();
        let mut seen: Vec<u8> = seen.into_iter().collect();
        seen.sort_unstable();
        assert_eq!(seen, expected);
    }

    #[test]
    fn hash_id_is_128_lowercase_alphanumerics() {
        fn check(input: &str, expected: bool) {
            assert_eq!(
                HashId::parse(input).map(|h| h.as_str().to_owned()),
                expected.then(|| input.to_owned()),
                "input of length {}",
                input.len()
            );
        }
        check(&"0".repeat(128), true);
        check(
            &"abcdefghijklmnopqrstuvwxyz0123456789".repeat(4)[..128],
            true,
        );
        check(&"a".repeat(127), false);
        check(&"a".repeat(129), false);
        check("", false);
        check(&format!("{}A", "a".repeat(127)), false);
        check(&format!("{}-", "a".repeat(127)), false);
        check(&format!("{}/", "a".repeat(127)), false);
        check(&format!("{}é", "a".repeat(126)), false);
    }

    #[test]
    fn originator_label_is_short_printable_ascii() {
        fn check(input: &str, expected: bool) {
            assert_eq!(
                OriginatorLabel::parse(input).map(|l| l.to_string()),
                expected.then(|| input.to_owned()),
                "input {input:?}"
            );
        }
        check("ON", true);
        check("Nova Scotia", true);
        check("x", true);
        check(&"L".repeat(31), true);
        check(&"L".repeat(32), false);
        check("", false);
        check("ON=1", false);
        check("ON:QC", false);
        check("ON\n", false);
        check("ON\t", false);
        check("Québec", false);
    }

    #[test]
    fn bearer_token_shape() {
        fn check(input: &str, expected: bool) {
            assert_eq!(
                BearerToken::parse(input).is_some(),
                expected,
                "input of length {}",
                input.len()
            );
        }
        check(&"t".repeat(20), true);
        check(&"t".repeat(63), true);
        check("!#$%&'()*+,-./0123456789;<>?@ABZ[]^_`az{|}~", true);
        check(&"t".repeat(19), false);
        check(&"t".repeat(64), false);
        check("", false);
        check(&format!("{}:", "t".repeat(20)), false);
        check(&format!("{}=", "t".repeat(20)), false);
        check(&format!("{} t", "t".repeat(20)), false);
        check(&format!("{}\tt", "t".repeat(20)), false);
        check(&format!("{}é", "t".repeat(20)), false);
    }

    const TOKEN_ON: &str = "on-token-0123456789abcdef";
    const TOKEN_QC: &str = "qc-token-0123456789abcdef-longer";

    #[test]
    fn key_claim_tokens_parse() {
        fn check(input: &str, expected: Result<Vec<&str>, &str>) {
            let actual = KeyClaimTokens::parse(input).map(|tokens| {
                tokens
                    .entries
                    .iter()
                    .map(|(_, label)| label.as_str().to_owned())
                    .collect::<Vec<_>>()
            });
            let expected = expected
                .map(|labels| labels.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .map_err(str::to_owned);
            assert_eq!(actual, expected, "input {input:?}");
        }
        check(&format!("{TOKEN_ON}=ON"), Ok(vec!["ON"]));
        check(
            &format!("{TOKEN_ON}=ON:{TOKEN_QC}=QC"),
            Ok(vec!["ON", "QC"]),
        );
        check(&format!(" {TOKEN_ON}=ON\n"), Ok(vec!["ON"]));
        check(
            &format!("{TOKEN_ON}=ON:{TOKEN_QC}=ON"),
            Ok(vec!["ON", "ON"]),
        );
        check("", Err("no token=label entries"));
        check("   ", Err("no token=label entries"));
        check(TOKEN_ON, Err("entry 1 is not of the form token=label"));
        check(
            &format!("{TOKEN_ON}=ON:"),
            Err("entry 2 is not of the form token=label"),
        );
        check(
            &format!("{TOKEN_ON}=ON:{TOKEN_QC}"),
            Err("entry 2 is not of the form token=label"),
        );
        check(
            "short=ON",
            Err(
                "entry 1: the token must be 20–63 printable ASCII characters without \
                 whitespace, ':' or '='",
            ),
        );
        check(
            &format!("{TOKEN_ON}=ON:{} x=QC", "t".repeat(20)),
            Err(
                "entry 2: the token must be 20–63 printable ASCII characters without \
                 whitespace, ':' or '='",
            ),
        );
        check(
            &format!("{TOKEN_ON}="),
            Err("entry 1: the label must be 1–31 printable ASCII characters without ':' or '='"),
        );
        check(
            &format!("{TOKEN_ON}=ON=1"),
            Err("entry 1: the label must be 1–31 printable ASCII characters without ':' or '='"),
        );
        check(
            &format!("{TOKEN_ON}=ON:{TOKEN_QC}=QC:{TOKEN_ON}=NB"),
            Err("entry 3 repeats the token of entry 1"),
        );
    }

    #[test]
    fn key_claim_token_errors_never_echo_the_token() {
        let secret = "my-secret-token-value-that-is-far-too-long-to-be-a-valid-token-ok";
        for input in [
            secret.to_owned(),
            format!("{secret}=ON"),
            format!("{TOKEN_ON}=ON:{TOKEN_ON}=QC"),
            format!("{TOKEN_ON}={}", "L".repeat(40)),
            TOKEN_ON.to_owned(),
        ] {
            let error = KeyClaimTokens::parse(&input).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
            assert!(!error.contains("token-0123"), "{error}");
        }
    }

    #[test]
    fn authenticate_returns_the_label_of_the_presented_token() {
        let tokens = KeyClaimTokens::parse(&format!("{TOKEN_ON}=ON:{TOKEN_QC}=QC")).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(!tokens.is_empty());
        fn check(tokens: &KeyClaimTokens, presented: &str, expected: Option<&str>) {
            assert_eq!(
                tokens.authenticate(presented).map(OriginatorLabel::as_str),
                expected,
                "presented {presented:?}"
            );
        }
        check(&tokens, TOKEN_ON, Some("ON"));
        check(&tokens, TOKEN_QC, Some("QC"));
        check(&tokens, "", None);
        check(&tokens, "on-token", None);
        check(&tokens, &TOKEN_ON[..TOKEN_ON.len() - 1], None);
        check(&tokens, &format!("{TOKEN_ON}x"), None);
        check(&tokens, &format!("{TOKEN_ON}\0"), None);
        check(&tokens, &TOKEN_ON.to_uppercase(), None);
        check(&tokens, &format!(" {TOKEN_ON}"), None);
        check(&tokens, &"x".repeat(10_000), None);
        // A prefix of the longer token that equals the shorter one's length but not bytes.
        check(&tokens, &TOKEN_QC[..TOKEN_ON.len()], None);
        // Padding bytes must not match a shorter token padded with zeros.
        let mut padded = TOKEN_ON.to_owned();
        padded.push_str(&"\0".repeat(BearerToken::MAX_LEN + 1 - TOKEN_ON.len()));
        check(&tokens, &padded, None);
        // The longest allowed token matches itself and not one byte more.
        let longest = "L".repeat(BearerToken::MAX_LEN);
        let tokens = KeyClaimTokens::parse(&format!("{longest}=NB")).unwrap();
        check(&tokens, &longest, Some("NB"));
        check(&tokens, &format!("{longest}L"), None);
    }

    #[test]
    fn region_is_short_and_safe_for_object_keys() {
        fn check(input: &str, expected: bool) {
            assert_eq!(
                Region::parse(input).map(|r| r.to_string()),
                expected.then(|| input.to_owned()),
                "input {input:?}"
            );
        }
        check("302", true);
        check("CA", true);
        check(DEFAULT_REGION, true);
        check(DEFAULT_EXPORT_REGION, true);
        check("ca_on_2", true);
        check(&"R".repeat(16), true);
        check(&"R".repeat(17), false);
        check("", false);
        check("C A", false);
        check("CA/..", false);
        check("CA-ON", false);
        check("É", false);
        assert_eq!(Region::parse("CA").unwrap().as_str(), "CA");
    }

    #[test]
    fn nacl_keys_accept_exactly_32_bytes() {
        fn check(input: &[u8], expected: Result<[u8; 32], InvalidLength>) {
            let app = AppPublicKey::try_from(input).map(|k| *k.as_bytes());
            let server = ServerPublicKey::try_from(input).map(|k| *k.as_bytes());
            let secret = ServerSecretKey::try_from(input).map(|k| *k.as_bytes());
            assert_eq!(app, expected, "app key of length {}", input.len());
            assert_eq!(server, expected, "server key of length {}", input.len());
            assert_eq!(secret, expected, "secret key of length {}", input.len());
        }
        check(&[9; 32], Ok([9; 32]));
        check(
            &[9; 31],
            Err(InvalidLength {
                expected: 32,
                actual: 31,
            }),
        );
        check(
            &[9; 33],
            Err(InvalidLength {
                expected: 32,
                actual: 33,
            }),
        );
        check(
            &[],
            Err(InvalidLength {
                expected: 32,
                actual: 0,
            }),
        );
    }

    #[test]
    fn report_type_numbers() {
        fn check(number: i32, expected: Option<ReportType>) {
            assert_eq!(ReportType::from_i32(number), expected, "number {number}");
            if let Some(report_type) = expected {
                assert_eq!(report_type.as_i32(), number);
            }
        }
        check(-1, None);
        check(0, None);
        check(1, Some(ReportType::ConfirmedTest));
        check(2, Some(ReportType::ConfirmedClinicalDiagnosis));
        check(3, Some(ReportType::SelfReport));
        check(4, Some(ReportType::Recursive));
        check(5, Some(ReportType::Revoked));
        check(6, None);
        check(i32::MAX, None);
    }

    #[test]
    fn report_type_numbers_match_the_wire_enum() {
        use diagnosis_proto::temporary_exposure_key::ReportType as Wire;
        for (domain, wire) in [
            (ReportType::ConfirmedTest, Wire::ConfirmedTest),
            (
                ReportType::ConfirmedClinicalDiagnosis,
                Wire::ConfirmedClinicalDiagnosis,
            ),
            (ReportType::SelfReport, Wire::SelfReport),
            (ReportType::Recursive, Wire::Recursive),
            (ReportType::Revoked, Wire::Revoked),
        ] {
            assert_eq!(domain.as_i32(), wire as i32);
        }
    }

    #[test]
    fn diagnosis_key_expiry() {
        fn check(rsin: i32, rolling_period: i32, expected: i64) {
            let key = DiagnosisKey {
                key_data: KeyData::from_array([1; 16]),
                rolling_start_interval_number: rsin,
                rolling_period,
                transmission_risk_level: 0,
                report_type: ReportType::ConfirmedTest,
                days_since_onset: Some(0),
            };
            assert_eq!(
                key.expiry_unix(),
                expected,
                "rsin {rsin} period {rolling_period}"
            );
        }
        check(0, 144, 86_400);
        check(2_833_056, 144, 1_699_920_000);
        check(2_833_056, 1, 1_699_834_200);
        check(i32::MAX, 144, (i64::from(i32::MAX) + 144) * 600);
    }
}
