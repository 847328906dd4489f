//! Wire-level pins of the contract (DESIGN §3): field numbers, proto2 presence
//! and defaults, exactly as the COVID Alert apps and the platforms encode them.

#![allow(clippy::unwrap_used)]

use diagnosis_proto::encrypted_upload_response::ErrorCode as UploadCode;
use diagnosis_proto::key_claim_response::ErrorCode as ClaimCode;
use diagnosis_proto::temporary_exposure_key::ReportType;
use diagnosis_proto::*;
use proptest::prelude::*;

#[test]
fn an_upload_response_with_error_none_is_08_00() {
    let response = EncryptedUploadResponse {
        error: Some(UploadCode::None as i32),
    };
    assert_eq!(response.encode_to_vec(), [0x08, 0x00]);
    // Absent is not the same bytes: proto2 keeps presence.
    assert_eq!(
        EncryptedUploadResponse::default().encode_to_vec(),
        Vec::<u8>::new()
    );
}

#[test]
fn error_code_numbers_follow_the_contract() {
    let upload = [
        (UploadCode::None, 0),
        (UploadCode::Unknown, 1),
        (UploadCode::InvalidKeypair, 2),
        (UploadCode::DecryptionFailed, 3),
        (UploadCode::InvalidPayload, 4),
        (UploadCode::ServerError, 5),
        (UploadCode::InvalidCryptoParameters, 6),
        (UploadCode::TooManyKeys, 7),
        (UploadCode::InvalidTimestamp, 8),
        (UploadCode::InvalidRollingPeriod, 10),
        (UploadCode::InvalidKeyData, 11),
        (UploadCode::InvalidRollingStartIntervalNumber, 12),
        (UploadCode::InvalidTransmissionRiskLevel, 13),
        (UploadCode::NoKeysInPayload, 14),
    ];
    for (code, number) in upload {
        assert_eq!(code as i32, number, "{code:?}");
    }
    assert!(UploadCode::try_from(9).is_err(), "9 is unused");
    let claim = [
        (ClaimCode::None, 0),
        (ClaimCode::Unknown, 1),
        (ClaimCode::InvalidOneTimeCode, 2),
        (ClaimCode::ServerError, 3),
        (ClaimCode::InvalidKey, 4),
        (ClaimCode::TemporaryBan, 5),
    ];
    for (code, number) in claim {
        assert_eq!(code as i32, number, "{code:?}");
    }
}

#[test]
fn an_absent_rolling_period_decodes_as_144_and_is_not_encoded() {
    let key = TemporaryExposureKey {
        key_data: Some(vec![0xab; 16]),
        ..Default::default()
    };
    let bytes = key.encode_to_vec();
    let decoded = TemporaryExposureKey::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.rolling_period, None);
    assert_eq!(decoded.rolling_period(), 144);
    // An explicit 144 is written (3 more bytes): exports leave it out.
    let explicit = TemporaryExposureKey {
        rolling_period: Some(144),
        ..key.clone()
    };
    assert_eq!(explicit.encode_to_vec().len(), bytes.len() + 3);
}

#[test]
fn a_temporary_exposure_key_has_the_platform_field_numbers() {
    let key = TemporaryExposureKey {
        key_data: Some((0..16).collect()),
        transmission_risk_level: Some(1),
        rolling_start_interval_number: Some(2_000_000),
        rolling_period: Some(144),
        report_type: Some(ReportType::ConfirmedTest as i32),
        days_since_onset_of_symptoms: Some(-1),
    };
    let mut expected = vec![0x0a, 0x10];
    expected.extend(0..16_u8);
    expected.extend([0x10, 0x01]); // 2: transmission_risk_level
    expected.extend([0x18, 0x80, 0x89, 0x7a]); // 3: rolling_start_interval_number 2 000 000
    expected.extend([0x20, 0x90, 0x01]); // 4: rolling_period 144
    expected.extend([0x28, 0x01]); // 5: report_type CONFIRMED_TEST
    expected.extend([0x30, 0x01]); // 6: sint32 −1 (zig-zag)
    assert_eq!(key.encode_to_vec(), expected);
}

#[test]
fn a_key_claim_request_has_the_apps_field_numbers() {
    let request = KeyClaimRequest {
        one_time_code: Some("AB".into()),
        app_public_key: Some(vec![7; 32]),
    };
    let mut expected = vec![0x0a, 0x02, b'A', b'B', 0x12, 0x20];
    expected.extend([7; 32]);
    assert_eq!(request.encode_to_vec(), expected);
}

#[test]
fn a_key_claim_response_carries_a_ban_duration() {
    let response = KeyClaimResponse {
        error: Some(ClaimCode::TemporaryBan as i32),
        server_public_key: None,
        tries_remaining: Some(0),
        remaining_ban_duration: Some(Duration {
            seconds: 3600,
            nanos: 0,
        }),
    };
    assert_eq!(
        response.encode_to_vec(),
        [0x08, 0x05, 0x18, 0x00, 0x22, 0x03, 0x08, 0x90, 0x1c]
    );
}

#[test]
fn an_unknown_report_type_survives_decoding_for_validation_to_reject() {
    let bytes = [0x28, 0x11]; // report_type = 17
    let key = TemporaryExposureKey::decode(bytes.as_slice()).unwrap();
    assert_eq!(key.report_type, Some(17));
}

#[test]
fn the_export_header_and_signature_oid_are_the_platforms() {
    assert_eq!(EXPORT_BIN_HEADER, b"EK Export v1    ");
    assert_eq!(EXPORT_BIN_HEADER.len(), 16);
    assert_eq!(SIGNATURE_ALGORITHM, "1.2.840.10045.4.3.2");
}

fn arb_key() -> impl Strategy<Value = TemporaryExposureKey> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(0..6_i32),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(key_data, trl, rsin, rp, rt, dso)| TemporaryExposureKey {
            key_data,
            transmission_risk_level: trl,
            rolling_start_interval_number: rsin,
            rolling_period: rp,
            report_type: rt,
            days_since_onset_of_symptoms: dso,
        })
}

proptest! {
    #[test]
    fn uploads_round_trip(seconds in any::<i64>(), keys in proptest::collection::vec(arb_key(), 0..30)) {
        let upload = Upload { timestamp: Some(Timestamp { seconds, nanos: 0 }), keys };
        let decoded = Upload::decode(upload.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(decoded, upload);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Upload::decode(bytes.as_slice());
        let _ = EncryptedUploadRequest::decode(bytes.as_slice());
        let _ = KeyClaimRequest::decode(bytes.as_slice());
    }
}
