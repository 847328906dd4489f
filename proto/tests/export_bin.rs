//! The streaming `export.bin` encoder and the allocation-free decoder against prost: for any
//! export, the encoder writes exactly prost's bytes and the decoder reads exactly prost's keys.

#![allow(clippy::unwrap_used)]

use diagnosis_proto::export_bin::{
    DEFAULT_ROLLING_PERIOD, DecodeError, ExportFields, Field, KeyFields, check_header, decode_key,
    encode_head, encode_key, next_field,
};
use diagnosis_proto::{
    EXPORT_BIN_HEADER, Message as _, SignatureInfo, TemporaryExposureKey,
    TemporaryExposureKeyExport,
};
use proptest::prelude::*;

/// The fields of one key, owned, as the encoder is given them.
#[derive(Debug, Clone)]
struct Key {
    key_data: Vec<u8>,
    transmission_risk_level: i32,
    rolling_start_interval_number: i32,
    rolling_period: i32,
    report_type: i32,
    days_since_onset_of_symptoms: Option<i32>,
}

impl Key {
    fn fields(&self) -> KeyFields<'_> {
        KeyFields {
            key_data: &self.key_data,
            transmission_risk_level: self.transmission_risk_level,
            rolling_start_interval_number: self.rolling_start_interval_number,
            rolling_period: self.rolling_period,
            report_type: self.report_type,
            days_since_onset_of_symptoms: self.days_since_onset_of_symptoms,
        }
    }

    /// The message prost would be given: `rolling_period` left unset when it is the default.
    fn message(&self) -> TemporaryExposureKey {
        TemporaryExposureKey {
            key_data: Some(self.key_data.clone()),
            transmission_risk_level: Some(self.transmission_risk_level),
            rolling_start_interval_number: Some(self.rolling_start_interval_number),
            rolling_period: (self.rolling_period != DEFAULT_ROLLING_PERIOD)
                .then_some(self.rolling_period),
            report_type: Some(self.report_type),
            days_since_onset_of_symptoms: self.days_since_onset_of_symptoms,
        }
    }
}

fn any_key() -> impl Strategy<Value = Key> {
    (
        proptest::collection::vec(any::<u8>(), 0..24),
        any::<i32>(),
        any::<i32>(),
        prop_oneof![Just(DEFAULT_ROLLING_PERIOD), any::<i32>()],
        any::<i32>(),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(key_data, trl, rsin, period, report_type, dso)| Key {
            key_data,
            transmission_risk_level: trl,
            rolling_start_interval_number: rsin,
            rolling_period: period,
            report_type,
            days_since_onset_of_symptoms: dso,
        })
}

fn any_signature_info() -> impl Strategy<Value = SignatureInfo> {
    let text = || proptest::option::of("[A-Za-z0-9_.]{0,12}");
    (text(), text(), text()).prop_map(|(version, id, algorithm)| SignatureInfo {
        verification_key_version: version,
        verification_key_id: id,
        signature_algorithm: algorithm,
    })
}

/// Streams an export through the encoder.
fn streamed(fields: &ExportFields<'_>, infos: &[SignatureInfo], keys: &[Key]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    encode_head(fields, infos, &mut buf);
    for key in keys {
        encode_key(&key.fields(), &mut scratch, &mut buf);
    }
    buf
}

/// The same export encoded the ordinary way: one message, by prost.
fn by_prost(fields: &ExportFields<'_>, infos: &[SignatureInfo], keys: &[Key]) -> Vec<u8> {
    let message = TemporaryExposureKeyExport {
        start_timestamp: Some(fields.start_timestamp),
        end_timestamp: Some(fields.end_timestamp),
        region: Some(fields.region.to_owned()),
        batch_num: Some(fields.batch_num),
        batch_size: Some(fields.batch_size),
        signature_infos: infos.to_vec(),
        keys: keys.iter().map(Key::message).collect(),
        revised_keys: Vec::new(),
    };
    let mut bytes = EXPORT_BIN_HEADER.to_vec();
    bytes.extend(message.encode_to_vec());
    bytes
}

/// Every key of an `export.bin`, read with `check_header`, `next_field` and `decode_key`.
fn read_keys(export_bin: &[u8]) -> Result<Vec<KeyFields<'_>>, DecodeError> {
    if !check_header(export_bin)? {
        return Err(DecodeError::Header);
    }
    let mut rest = &export_bin[EXPORT_BIN_HEADER.len()..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let Some((field, used)) = next_field(rest)? else {
            return Err(DecodeError::MalformedKey);
        };
        if let Field::Key(body) = field {
            keys.push(decode_key(body)?);
        }
        rest = &rest[used..];
    }
    Ok(keys)
}

/// One key's fields in a form both decoders' answers convert to.
type Fields = (Vec<u8>, i32, Option<i32>, i32, Option<i32>, Option<i32>);

/// The keys as prost decodes them, in the decoder's terms.
fn prost_keys(export_bin: &[u8]) -> Vec<Fields> {
    TemporaryExposureKeyExport::decode(&export_bin[EXPORT_BIN_HEADER.len()..])
        .unwrap()
        .keys
        .into_iter()
        .map(|k| {
            (
                k.key_data.clone().unwrap_or_default(),
                k.transmission_risk_level(),
                k.rolling_start_interval_number,
                k.rolling_period(),
                k.report_type,
                k.days_since_onset_of_symptoms,
            )
        })
        .collect()
}

#[test]
fn the_default_rolling_period_is_omitted() {
    let key = Key {
        key_data: vec![7; 16],
        transmission_risk_level: 3,
        rolling_start_interval_number: 2_940_000,
        rolling_period: 144,
        report_type: 1,
        days_since_onset_of_symptoms: None,
    };
    let fields = ExportFields {
        start_timestamp: 1_764_280_800,
        end_timestamp: 1_764_284_400,
        region: "CA",
        batch_num: 1,
        batch_size: 1,
    };
    let bytes = streamed(&fields, &[], std::slice::from_ref(&key));
    let decoded = TemporaryExposureKeyExport::decode(&bytes[16..]).unwrap();
    assert_eq!(decoded.keys[0].rolling_period, None);
    assert_eq!(read_keys(&bytes).unwrap()[0].rolling_period, 144);
    // With 72 the field is there, and read back as written.
    let short = Key {
        rolling_period: 72,
        ..key
    };
    let bytes = streamed(&fields, &[], std::slice::from_ref(&short));
    let decoded = TemporaryExposureKeyExport::decode(&bytes[16..]).unwrap();
    assert_eq!(decoded.keys[0].rolling_period, Some(72));
    assert_eq!(read_keys(&bytes).unwrap()[0].rolling_period, 72);
}

#[test]
fn malformed_keys_are_refused() {
    let check = |body: &[u8], why: &str| {
        assert_eq!(decode_key(body), Err(DecodeError::MalformedKey), "{why}");
    };
    check(&[0x0a, 0x02, 1], "key_data shorter than its length");
    check(&[0x18, 0x01, 0x28, 0x01], "no key_data");
    check(
        &[0x0a, 0x00, 0x28, 0x01],
        "no rolling_start_interval_number",
    );
    check(&[0x0a, 0x00, 0x18, 0x01], "no report_type");
    check(
        &[0x0a, 0x00, 0x18, 0x01, 0x28, 0x01, 0x38, 0x01],
        "an unknown field",
    );
    check(
        &[0x0a, 0x00, 0x18, 0x01, 0x2d, 0, 0, 0, 0],
        "a fixed32 report_type",
    );
    // Regression: a length varint near 2^64 overflowed the bounds arithmetic.
    check(
        &[
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        "a key_data length near 2^64",
    );
    assert_eq!(check_header(b"EK Export"), Ok(false));
    assert_eq!(check_header(b"EK Import"), Err(DecodeError::Header));
    assert_eq!(next_field(&[0x3b]), Err(DecodeError::WireType));
    assert_eq!(
        next_field(&[0x3a, 0x05, 1, 2]),
        Ok(None),
        "a field cut short"
    );
    assert_eq!(next_field(&[0x80; 11]), Err(DecodeError::Varint));
}

proptest! {
    #[test]
    fn the_streaming_encoder_writes_prosts_bytes(
        start in any::<u64>(),
        end in any::<u64>(),
        region in "[A-Za-z0-9_]{0,16}",
        batch_num in any::<i32>(),
        batch_size in any::<i32>(),
        infos in proptest::collection::vec(any_signature_info(), 0..4),
        keys in proptest::collection::vec(any_key(), 0..24),
    ) {
        let fields = ExportFields {
            start_timestamp: start,
            end_timestamp: end,
            region: &region,
            batch_num,
            batch_size,
        };
        let bytes = streamed(&fields, &infos, &keys);
        prop_assert_eq!(&bytes, &by_prost(&fields, &infos, &keys));

        // And the decoder reads back exactly the keys prost decodes.
        let decoded: Vec<Fields> = read_keys(&bytes)
            .unwrap()
            .into_iter()
            .map(|k| (
                k.key_data.to_vec(),
                k.transmission_risk_level,
                Some(k.rolling_start_interval_number),
                k.rolling_period,
                Some(k.report_type),
                k.days_since_onset_of_symptoms,
            ))
            .collect();
        prop_assert_eq!(decoded, prost_keys(&bytes));
    }

    #[test]
    fn the_decoder_reads_any_key_prost_writes(
        key_data in proptest::collection::vec(any::<u8>(), 0..24),
        trl in proptest::option::of(any::<i32>()),
        rsin in any::<i32>(),
        period in proptest::option::of(any::<i32>()),
        report_type in any::<i32>(),
        dso in proptest::option::of(any::<i32>()),
    ) {
        let message = TemporaryExposureKey {
            key_data: Some(key_data),
            transmission_risk_level: trl,
            rolling_start_interval_number: Some(rsin),
            rolling_period: period,
            report_type: Some(report_type),
            days_since_onset_of_symptoms: dso,
        };
        let wire = message.encode_to_vec();
        let decoded = decode_key(&wire).unwrap();
        let again = TemporaryExposureKey::decode(wire.as_slice()).unwrap();
        prop_assert_eq!(Some(decoded.key_data.to_vec()), again.key_data.clone());
        prop_assert_eq!(decoded.transmission_risk_level, again.transmission_risk_level());
        prop_assert_eq!(Some(decoded.rolling_start_interval_number), again.rolling_start_interval_number);
        prop_assert_eq!(decoded.rolling_period, again.rolling_period());
        prop_assert_eq!(Some(decoded.report_type), again.report_type);
        prop_assert_eq!(decoded.days_since_onset_of_symptoms, again.days_since_onset_of_symptoms);
    }

    #[test]
    fn arbitrary_bytes_are_an_answer_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // Whatever the bytes, each call returns; a key it accepts is one prost accepts too.
        if let Ok(key) = decode_key(&bytes) {
            let again = TemporaryExposureKey::decode(bytes.as_slice());
            prop_assert!(again.is_ok(), "{key:?}");
            let again = again.unwrap();
            prop_assert_eq!(Some(key.key_data.to_vec()), again.key_data.clone());
            prop_assert_eq!(key.rolling_period, again.rolling_period());
            prop_assert_eq!(key.days_since_onset_of_symptoms, again.days_since_onset_of_symptoms);
        }
        let _ = next_field(&bytes);
        let _ = check_header(&bytes);
        let mut with_header = EXPORT_BIN_HEADER.to_vec();
        with_header.extend(&bytes);
        let _ = read_keys(&with_header);
    }
}
