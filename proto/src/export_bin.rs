//! `export.bin` written and read field by field (DESIGN §3, §4.1): the one place outside the
//! generated code that knows the field numbers of `TemporaryExposureKeyExport` and
//! `TemporaryExposureKey`.
//!
//! The exporter cannot build one `TemporaryExposureKeyExport` and encode it: a window may hold
//! 750 000 keys, and it streams them out of the database one at a time. So the encoder here
//! writes the header and fields 1–6 once ([`encode_head`]), then one field-7 key per call
//! ([`encode_key`]), in ascending field-number order exactly as prost emits the whole message:
//! the bytes are prost's `encode_to_vec` of the equivalent message, behind [`EXPORT_BIN_HEADER`].
//!
//! Reading back runs once per key of every merged window, so the decoder allocates nothing:
//! [`next_field`] walks the top-level fields of a message as its bytes arrive, and
//! [`decode_key`] reads one `TemporaryExposureKey` into borrowed [`KeyFields`]. Both are for
//! files the exporter wrote: an unknown field inside a key or an unknown wire type is an error,
//! never a guess. Neither may panic, whatever the bytes.

use std::fmt;

use prost::encoding::{self, WireType};

use crate::{EXPORT_BIN_HEADER, SignatureInfo};

// Field numbers of `TemporaryExposureKeyExport` (DESIGN §3).
const EXPORT_START_TIMESTAMP: u32 = 1;
const EXPORT_END_TIMESTAMP: u32 = 2;
const EXPORT_REGION: u32 = 3;
const EXPORT_BATCH_NUM: u32 = 4;
const EXPORT_BATCH_SIZE: u32 = 5;
const EXPORT_SIGNATURE_INFOS: u32 = 6;
const EXPORT_KEYS: u32 = 7;

// Field numbers of `TemporaryExposureKey` (DESIGN §3).
const TEK_KEY_DATA: u32 = 1;
const TEK_TRANSMISSION_RISK_LEVEL: u32 = 2;
const TEK_ROLLING_START_INTERVAL_NUMBER: u32 = 3;
const TEK_ROLLING_PERIOD: u32 = 4;
const TEK_REPORT_TYPE: u32 = 5;
const TEK_DAYS_SINCE_ONSET_OF_SYMPTOMS: u32 = 6;

/// `rolling_period` is a proto2 field with `[default = 144]`. The encoder omits the value when
/// it equals the default, which the platforms read back as 144 (DESIGN §4.1), and the decoder
/// answers 144 when the field is absent.
pub const DEFAULT_ROLLING_PERIOD: i32 = 144;

/// Fields 1–5 of `TemporaryExposureKeyExport`: everything before the signature infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFields<'a> {
    /// `start_timestamp`, unix seconds.
    pub start_timestamp: u64,
    /// `end_timestamp`, unix seconds.
    pub end_timestamp: u64,
    /// `region`.
    pub region: &'a str,
    /// `batch_num`.
    pub batch_num: i32,
    /// `batch_size`.
    pub batch_size: i32,
}

/// One `TemporaryExposureKey` as it is written and read back. Every field is present except
/// `days_since_onset_of_symptoms`; `rolling_period` is written only when it is not
/// [`DEFAULT_ROLLING_PERIOD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFields<'a> {
    /// `key_data`, as many bytes as the wire holds (the domain insists on 16).
    pub key_data: &'a [u8],
    /// `transmission_risk_level` (0 when absent).
    pub transmission_risk_level: i32,
    /// `rolling_start_interval_number`.
    pub rolling_start_interval_number: i32,
    /// `rolling_period` (144 when absent).
    pub rolling_period: i32,
    /// `report_type`, the enum's number, not checked against the enum.
    pub report_type: i32,
    /// `days_since_onset_of_symptoms`.
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// Writes the start of `export.bin` into `buf`: [`EXPORT_BIN_HEADER`], fields 1–5, then one
/// field 6 per signature info, in the order given. Keys follow with [`encode_key`].
pub fn encode_head(
    fields: &ExportFields<'_>,
    signature_infos: &[SignatureInfo],
    buf: &mut Vec<u8>,
) {
    buf.extend_from_slice(EXPORT_BIN_HEADER);
    encoding::fixed64::encode(EXPORT_START_TIMESTAMP, &fields.start_timestamp, buf);
    encoding::fixed64::encode(EXPORT_END_TIMESTAMP, &fields.end_timestamp, buf);
    // prost's string encoder takes a `String`; written by hand it is the same tag, length and
    // bytes, without copying the region for every file.
    encoding::encode_key(EXPORT_REGION, WireType::LengthDelimited, buf);
    encoding::encode_varint(fields.region.len() as u64, buf);
    buf.extend_from_slice(fields.region.as_bytes());
    encoding::int32::encode(EXPORT_BATCH_NUM, &fields.batch_num, buf);
    encoding::int32::encode(EXPORT_BATCH_SIZE, &fields.batch_size, buf);
    for info in signature_infos {
        encoding::message::encode(EXPORT_SIGNATURE_INFOS, info, buf);
    }
}

/// Appends one key (field 7) to `buf`. `scratch` holds the key's own encoding while its length
/// is not yet known; reused across calls, it makes a key cost no allocation once warm.
pub fn encode_key(key: &KeyFields<'_>, scratch: &mut Vec<u8>, buf: &mut Vec<u8>) {
    let tek = scratch;
    tek.clear();
    encoding::encode_key(TEK_KEY_DATA, WireType::LengthDelimited, tek);
    encoding::encode_varint(key.key_data.len() as u64, tek);
    tek.extend_from_slice(key.key_data);
    encoding::int32::encode(
        TEK_TRANSMISSION_RISK_LEVEL,
        &key.transmission_risk_level,
        tek,
    );
    encoding::int32::encode(
        TEK_ROLLING_START_INTERVAL_NUMBER,
        &key.rolling_start_interval_number,
        tek,
    );
    if key.rolling_period != DEFAULT_ROLLING_PERIOD {
        encoding::int32::encode(TEK_ROLLING_PERIOD, &key.rolling_period, tek);
    }
    // `report_type` is an enum field: varint of the i32, the same encoding as int32.
    encoding::int32::encode(TEK_REPORT_TYPE, &key.report_type, tek);
    if let Some(days) = key.days_since_onset_of_symptoms {
        encoding::sint32::encode(TEK_DAYS_SINCE_ONSET_OF_SYMPTOMS, &days, tek);
    }

    encoding::encode_key(EXPORT_KEYS, WireType::LengthDelimited, buf);
    encoding::encode_varint(tek.len() as u64, buf);
    buf.extend_from_slice(tek);
}

/// Why bytes could not be read as the exporter's `export.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes do not start with [`EXPORT_BIN_HEADER`].
    Header,
    /// A field has a wire type this format never uses (3, 4, 6 or 7).
    WireType,
    /// A varint does not fit 64 bits.
    Varint,
    /// A `TemporaryExposureKey` is truncated, has an unknown field or a field of the wrong
    /// wire type, or lacks `key_data`, `rolling_start_interval_number` or `report_type`.
    MalformedKey,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Header => "export.bin without its header",
            DecodeError::WireType => "unknown protobuf wire type",
            DecodeError::Varint => "protobuf varint longer than 64 bits",
            DecodeError::MalformedKey => "malformed key",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Checks the 16-byte header. `Ok(false)` while fewer bytes than the header have arrived.
pub fn check_header(bytes: &[u8]) -> Result<bool, DecodeError> {
    if bytes.len() < EXPORT_BIN_HEADER.len() {
        // A prefix that already differs will never become the header.
        return if EXPORT_BIN_HEADER.starts_with(bytes) {
            Ok(false)
        } else {
            Err(DecodeError::Header)
        };
    }
    if bytes.starts_with(EXPORT_BIN_HEADER) {
        Ok(true)
    } else {
        Err(DecodeError::Header)
    }
}

/// One top-level field of `TemporaryExposureKeyExport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// Field 7: the encoding of one `TemporaryExposureKey`, for [`decode_key`].
    Key(&'a [u8]),
    /// Any other field, skipped.
    Other,
}

/// Reads the next top-level field of a `TemporaryExposureKeyExport` (the bytes after the
/// header) and how many bytes it takes. `Ok(None)` when `bytes` end before the field does:
/// the caller fetches more and asks again.
pub fn next_field(bytes: &[u8]) -> Result<Option<(Field<'_>, usize)>, DecodeError> {
    let Some((tag, tag_len)) = varint(bytes)? else {
        return Ok(None);
    };
    let rest = &bytes[tag_len..];
    let (body, used) = match tag & 7 {
        0 => match varint(rest)? {
            Some((_, len)) => (None, len),
            None => return Ok(None),
        },
        1 => (None, 8),
        5 => (None, 4),
        2 => {
            let Some((len, len_len)) = varint(rest)? else {
                return Ok(None);
            };
            // The length is hostile: a varint near 2^64 must not overflow the bounds.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            match rest.get(len_len..len_len.saturating_add(len)) {
                Some(body) => (Some(body), len_len + len),
                None => return Ok(None),
            }
        }
        _ => return Err(DecodeError::WireType),
    };
    if rest.len() < used {
        return Ok(None);
    }
    let field = match body {
        Some(body) if tag >> 3 == u64::from(EXPORT_KEYS) => Field::Key(body),
        _ => Field::Other,
    };
    Ok(Some((field, tag_len + used)))
}

/// Decodes one `TemporaryExposureKey` without allocating. As in protobuf, a repeated field
/// keeps its last value. Unknown fields are refused, as the exporter never writes any.
pub fn decode_key(mut body: &[u8]) -> Result<KeyFields<'_>, DecodeError> {
    let mut key_data = None;
    let mut risk = 0;
    let mut start = None;
    let mut period = DEFAULT_ROLLING_PERIOD;
    let mut report = None;
    let mut onset = None;
    while !body.is_empty() {
        let tag;
        (tag, body) = take_varint(body)?;
        if tag == (u64::from(TEK_KEY_DATA) << 3) | 2 {
            let (len, rest) = take_varint(body)?;
            // The length is hostile: a varint near 2^64 must not overflow the bounds.
            let len = usize::try_from(len).map_err(|_| DecodeError::MalformedKey)?;
            key_data = Some(rest.get(..len).ok_or(DecodeError::MalformedKey)?);
            body = &rest[len..];
            continue;
        }
        if tag & 7 != 0 {
            return Err(DecodeError::MalformedKey);
        }
        let value;
        (value, body) = take_varint(body)?;
        // int32 fields travel as 64-bit two's complement varints; truncation is the decoding.
        let int32 = value as i32;
        match u32::try_from(tag >> 3).unwrap_or(0) {
            TEK_TRANSMISSION_RISK_LEVEL => risk = int32,
            TEK_ROLLING_START_INTERVAL_NUMBER => start = Some(int32),
            TEK_ROLLING_PERIOD => period = int32,
            TEK_REPORT_TYPE => report = Some(int32),
            // sint32: zigzag of the low 32 bits.
            TEK_DAYS_SINCE_ONSET_OF_SYMPTOMS => {
                let low = value as u32;
                onset = Some(((low >> 1) as i32) ^ -((low & 1) as i32));
            }
            _ => return Err(DecodeError::MalformedKey),
        }
    }
    match (key_data, start, report) {
        (Some(key_data), Some(start), Some(report)) => Ok(KeyFields {
            key_data,
            transmission_risk_level: risk,
            rolling_start_interval_number: start,
            rolling_period: period,
            report_type: report,
            days_since_onset_of_symptoms: onset,
        }),
        _ => Err(DecodeError::MalformedKey),
    }
}

/// A varint of a key and the bytes after it; a key that ends inside one is malformed.
fn take_varint(body: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let (value, used) = varint(body)
        .map_err(|_| DecodeError::MalformedKey)?
        .ok_or(DecodeError::MalformedKey)?;
    Ok((value, &body[used..]))
}

/// A protobuf varint and its length; `Ok(None)` when the bytes end first. As in prost, a
/// varint must fit 64 bits: ten bytes at most, the tenth 0 or 1.
fn varint(bytes: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut value = 0_u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(DecodeError::Varint);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 10 {
        Err(DecodeError::Varint)
    } else {
        Ok(None)
    }
}
