//! The app simulator: plays the health portal (issuing codes) and the phone
//! (claiming a code, sealing and uploading keys) through the real HTTP API,
//! exactly as the COVID Alert apps do. Used by the end-to-end tests and the
//! load generator.

use anyhow::{Context, bail};
use diagnosis_core::crypto::{generate_app_keypair, random_nonce, seal_upload_payload};
use diagnosis_core::domain::{AppPublicKey, ServerPublicKey};
use diagnosis_core::time::interval_number;
use diagnosis_proto::{
    EncryptedUploadRequest, EncryptedUploadResponse, KeyClaimRequest, KeyClaimResponse, Message,
    TemporaryExposureKey, Timestamp, Upload,
};
use hyper::{Method, StatusCode};
use rand::RngExt;

use crate::http_client::{HttpClient, Reply};

/// A health portal with its bearer token.
#[derive(Debug, Clone)]
pub struct Portal {
    pub base_url: String,
    pub token: String,
    pub client: HttpClient,
}

impl Portal {
    pub fn new(base_url: &str, token: &str) -> Portal {
        Portal {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: HttpClient::new(),
        }
    }

    /// `POST /new-key-claim[/{hash_id}]` as the raw reply.
    pub async fn request_code(&self, hash_id: Option<&str>) -> anyhow::Result<Reply> {
        let url = match hash_id {
            Some(hash_id) => format!("{}/new-key-claim/{hash_id}", self.base_url),
            None => format!("{}/new-key-claim", self.base_url),
        };
        let authorization = format!("Bearer {}", self.token);
        self.client
            .send(
                Method::POST,
                &url,
                &[("authorization", &authorization)],
                Vec::new(),
            )
            .await
    }

    /// Issues a code and returns it (without the trailing newline).
    pub async fn issue_code(&self) -> anyhow::Result<String> {
        let reply = self.request_code(None).await?;
        if reply.status != StatusCode::OK {
            bail!("new-key-claim answered {}", reply.status);
        }
        Ok(reply.text().trim_end().to_owned())
    }
}

/// A phone running the app: its own keypair and, once claimed, the server's key.
#[derive(Debug)]
pub struct Phone {
    pub base_url: String,
    pub client: HttpClient,
    secret: [u8; 32],
    pub app_public: AppPublicKey,
    pub server_public: Option<ServerPublicKey>,
}

/// A decoded claim reply.
#[derive(Debug, Clone)]
pub struct ClaimReply {
    pub status: StatusCode,
    pub response: KeyClaimResponse,
}

/// A decoded upload reply.
#[derive(Debug, Clone)]
pub struct UploadReply {
    pub status: StatusCode,
    pub response: EncryptedUploadResponse,
}

impl UploadReply {
    /// Decodes the reply of `POST /upload`.
    pub fn read(reply: &Reply) -> anyhow::Result<UploadReply> {
        let response = EncryptedUploadResponse::decode(reply.body.as_ref())
            .context("decoding EncryptedUploadResponse")?;
        Ok(UploadReply {
            status: reply.status,
            response,
        })
    }
}

impl Phone {
    pub fn new(base_url: &str) -> Phone {
        Phone::with_client(base_url, HttpClient::new())
    }

    /// A phone with a new keypair whose requests go through `client` (and its connections).
    pub fn with_client(base_url: &str, client: HttpClient) -> Phone {
        let (secret, app_public) = generate_app_keypair();
        Phone {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
            secret,
            app_public,
            server_public: None,
        }
    }

    /// `POST /claim-key` with the code as typed; remembers the server key on success.
    pub async fn claim(&mut self, typed_code: &str) -> anyhow::Result<ClaimReply> {
        let reply = self.send_claim(typed_code, &[]).await?;
        self.read_claim(&reply)
    }

    /// Sends `POST /claim-key` with the code as typed and `headers` besides the app's own (for
    /// example the `X-Forwarded-For` a load balancer adds), and returns the raw reply: an
    /// error here means no answer came.
    pub async fn send_claim(
        &self,
        typed_code: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let request = KeyClaimRequest {
            one_time_code: Some(typed_code.trim().to_owned()),
            app_public_key: Some(self.app_public.as_bytes().to_vec()),
        };
        self.client
            .post_protobuf_with(
                &format!("{}/claim-key", self.base_url),
                headers,
                request.encode_to_vec(),
            )
            .await
    }

    /// Decodes a claim's reply and, on success, remembers the server key.
    pub fn read_claim(&mut self, reply: &Reply) -> anyhow::Result<ClaimReply> {
        let response =
            KeyClaimResponse::decode(reply.body.as_ref()).context("decoding KeyClaimResponse")?;
        if reply.status.is_success() {
            let key = ServerPublicKey::try_from(response.server_public_key())
                .map_err(|_| anyhow::anyhow!("claim succeeded without a 32-byte server key"))?;
            self.server_public = Some(key);
        }
        Ok(ClaimReply {
            status: reply.status,
            response,
        })
    }

    /// Seals `upload` to the claimed server key and sends it.
    pub async fn upload(&self, upload: &Upload) -> anyhow::Result<UploadReply> {
        let request = self.sealed_request(upload)?;
        self.send_upload(request.encode_to_vec()).await
    }

    /// The encrypted request the app would send for `upload`.
    pub fn sealed_request(&self, upload: &Upload) -> anyhow::Result<EncryptedUploadRequest> {
        let server_public = self
            .server_public
            .as_ref()
            .context("the phone has not claimed a code")?;
        let nonce = random_nonce();
        let payload =
            seal_upload_payload(&self.secret, server_public, &nonce, &upload.encode_to_vec());
        Ok(EncryptedUploadRequest {
            server_public_key: Some(server_public.as_bytes().to_vec()),
            app_public_key: Some(self.app_public.as_bytes().to_vec()),
            nonce: Some(nonce.to_vec()),
            payload: Some(payload),
        })
    }

    /// Sends raw bytes to `POST /upload` and decodes the reply.
    pub async fn send_upload(&self, body: Vec<u8>) -> anyhow::Result<UploadReply> {
        UploadReply::read(&self.post_upload(body).await?)
    }

    /// Sends raw bytes to `POST /upload` and returns the raw reply: an error here means no
    /// answer came.
    pub async fn post_upload(&self, body: Vec<u8>) -> anyhow::Result<Reply> {
        self.client
            .post_protobuf(&format!("{}/upload", self.base_url), body)
            .await
    }

    /// Seals arbitrary plaintext bytes (for tests of malformed payloads).
    pub fn seal_raw(&self, plaintext: &[u8]) -> anyhow::Result<EncryptedUploadRequest> {
        let server_public = self
            .server_public
            .as_ref()
            .context("the phone has not claimed a code")?;
        let nonce = random_nonce();
        Ok(EncryptedUploadRequest {
            server_public_key: Some(server_public.as_bytes().to_vec()),
            app_public_key: Some(self.app_public.as_bytes().to_vec()),
            nonce: Some(nonce.to_vec()),
            payload: Some(seal_upload_payload(
                &self.secret,
                server_public,
                &nonce,
                plaintext,
            )),
        })
    }
}

/// The keys a COVID Alert app uploads on day `now`: one per day for `days`
/// days, newest first, transmission risk 1, explicit rolling period 144, no
/// report type or days since onset.
pub fn app_keys(now_unix: i64, days: usize) -> Vec<TemporaryExposureKey> {
    let today = interval_number(now_unix) / 144 * 144;
    let mut rng = rand::rng();
    (0..days)
        .map(|day| {
            let mut key_data = vec![0_u8; 16];
            rng.fill(&mut key_data[..]);
            TemporaryExposureKey {
                key_data: Some(key_data),
                transmission_risk_level: Some(1),
                rolling_start_interval_number: i32::try_from(today - 144 * day as i64).ok(),
                rolling_period: Some(144),
                report_type: None,
                days_since_onset_of_symptoms: None,
            }
        })
        .collect()
}

/// What a phone uploads right now: its keys of the last `days` days, stamped with the
/// system clock.
pub fn upload_now(days: usize) -> Upload {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    upload_of(app_keys(now, days), now)
}

/// An `Upload` of `keys` stamped with `now_unix`.
pub fn upload_of(keys: Vec<TemporaryExposureKey>, now_unix: i64) -> Upload {
    Upload {
        timestamp: Some(Timestamp {
            seconds: now_unix,
            nanos: 0,
        }),
        keys,
    }
}
