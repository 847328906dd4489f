//! The soak's load: what a real day asks of the submit service, through the real HTTP API,
//! from a fixed number of connections, either paced at a fixed rate (open loop: a request is
//! sent at its moment whatever the answers before it did) or as fast as the service answers
//! (the capacity run).
//!
//! **The mix is a day of diagnosed cases.** Each case is one code issued by a portal, one
//! claim by the app, a first upload of its keys of the last 14 days, then one upload of one
//! new key for each of the 14 days after (the apps keep sharing their new keys for 14 days).
//! So a day's requests are 1 issue : 1 claim : 15 uploads (88 % uploads), and every key sent
//! is new: nothing is replayed, and each accepted upload stores its keys. A case uses
//! 14 + 14 = 28 keys of its keypair's quota (`INITIAL_REMAINING_KEYS`, 43), so no quota runs
//! out however long the soak lasts, without seeding keypairs: every keypair uploaded to was
//! claimed by the load itself, at the day's ratio.
//!
//! **Each case comes from its own address.** The service is run behind a (simulated) load
//! balancer: the claim carries `X-Forwarded-For` with an address of its own, as phones
//! reach a real deployment, so claims are not all one client's.
//!
//! Nothing here prints a code, a key or a token.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diagnosis_proto::Message as _;
use diagnosis_proto::encrypted_upload_response::ErrorCode as UploadError;
use diagnosis_proto::key_claim_response::ErrorCode as ClaimError;
use hyper::StatusCode;
use tokio::time::Instant;

use crate::dataset::Latencies;
use crate::http_client::{HttpClient, Reply};
use crate::simulator::{Phone, Portal, UploadReply, upload_now};

/// Keys of a case's first upload: its keys of the last 14 days.
pub const FIRST_UPLOAD_KEYS: usize = 14;
/// Uploads of one new key each that follow the first one.
pub const FOLLOW_UP_UPLOADS: usize = 14;
/// Requests of one case: the issue, the claim, the first upload and the follow-ups.
pub const REQUESTS_PER_CASE: usize = 3 + FOLLOW_UP_UPLOADS;

/// The service the load goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub base_url: String,
    /// The portal's bearer token.
    pub token: String,
    /// A request without a complete answer within this counts as unanswered.
    pub request_bound: Duration,
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Issue,
    Claim,
    Upload,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Issue => 0,
            Kind::Claim => 1,
            Kind::Upload => 2,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The answer the contract gives a valid request: 200 with a code, a server key, `NONE`.
    Expected,
    /// Any other answer.
    Unexpected,
    /// No complete answer within the bound (or the connection failed).
    Unanswered,
}

/// The requests of one window, by the moment each was due.
#[derive(Debug, Clone, Default)]
pub struct WindowTally {
    pub requests: u64,
    /// Requests per [`Kind`]: issues, claims, uploads.
    pub by_kind: [u64; 3],
    pub unexpected: u64,
    pub unanswered: u64,
    /// Per [`Kind`], from the moment each request was due to its complete answer, answered or
    /// not.
    pub latencies: [Latencies; 3],
}

impl WindowTally {
    fn record(&mut self, kind: Kind, outcome: Outcome, latency: Duration) {
        self.requests += 1;
        self.by_kind[kind.index()] += 1;
        match outcome {
            Outcome::Expected => {}
            Outcome::Unexpected => self.unexpected += 1,
            Outcome::Unanswered => self.unanswered += 1,
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies[kind.index()].0.push(micros);
    }

    fn merge(&mut self, other: WindowTally) {
        self.requests += other.requests;
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            *mine += theirs;
        }
        self.unexpected += other.unexpected;
        self.unanswered += other.unanswered;
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies) {
            mine.0.extend(theirs.0);
        }
    }

    /// Every request's latency, whatever its kind.
    pub fn all_latencies(&self) -> Latencies {
        Latencies(
            self.latencies
                .iter()
                .flat_map(|l| l.0.iter().copied())
                .collect(),
        )
    }

    /// Unexpected answers and unanswered requests.
    pub fn errors(&self) -> u64 {
        self.unexpected + self.unanswered
    }
}

/// The requests due in one second of a run: how many, and the slowest of each kind, so that a
/// stall can be set beside what the database and the machine did in that second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecondTally {
    pub requests: u32,
    /// Per [`Kind`], the longest latency (from the due moment to the complete answer), µs.
    pub max_latency_us: [u64; 3],
    /// Per [`Kind`], the longest time from sending to the complete answer, µs: the service's
    /// share of the latency.
    pub max_service_us: [u64; 3],
    /// The longest delay from the due moment to sending, µs: a request waits for its
    /// connection's previous answer, or for the generator itself.
    pub max_send_delay_us: u64,
}

impl SecondTally {
    fn record(&mut self, kind: Kind, latency: Duration, service: Duration) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.requests = self.requests.saturating_add(1);
        let slowest = &mut self.max_latency_us[kind.index()];
        *slowest = (*slowest).max(micros(latency));
        let slowest = &mut self.max_service_us[kind.index()];
        *slowest = (*slowest).max(micros(service));
        self.max_send_delay_us = self
            .max_send_delay_us
            .max(micros(latency.saturating_sub(service)));
    }

    fn merge(&mut self, other: &SecondTally) {
        self.requests = self.requests.saturating_add(other.requests);
        for (mine, theirs) in self.max_latency_us.iter_mut().zip(other.max_latency_us) {
            *mine = (*mine).max(theirs);
        }
        for (mine, theirs) in self.max_service_us.iter_mut().zip(other.max_service_us) {
            *mine = (*mine).max(theirs);
        }
        self.max_send_delay_us = self.max_send_delay_us.max(other.max_send_delay_us);
    }
}

/// Merges `theirs` into `mine`, second by second.
fn merge_seconds(mine: &mut Vec<SecondTally>, theirs: &[SecondTally]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), SecondTally::default());
    }
    for (mine, theirs) in mine.iter_mut().zip(theirs) {
        mine.merge(theirs);
    }
}

/// Requests sent and failed so far, across every connection, for progress lines.
#[derive(Debug, Default)]
pub struct Progress {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

/// When the requests of each connection are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each connection sends its next request as soon as the last one is answered.
    AsAnswered,
    /// `rate` requests a second in all, evenly spaced, whatever the answers do: request i is
    /// due at `start + i / rate` and sent by the first connection free from then on.
    Fixed { rate: f64 },
}

/// The windows a run is cut into, each ending at a boundary (from the run's start).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub start: Instant,
    pub boundaries: Vec<Duration>,
}

impl Schedule {
    /// `windows` windows of `window` each, starting now.
    pub fn even(windows: usize, window: Duration) -> Schedule {
        Schedule {
            start: Instant::now(),
            boundaries: (1..=windows).map(|w| window * w as u32).collect(),
        }
    }

    /// The window an instant falls in, or `None` once the run is over.
    fn window_of(&self, at: Instant) -> Option<usize> {
        let offset = at.saturating_duration_since(self.start);
        let window = self.boundaries.partition_point(|end| *end <= offset);
        (window < self.boundaries.len()).then_some(window)
    }

    pub fn end(&self) -> Instant {
        self.start + self.boundaries.last().copied().unwrap_or_default()
    }
}

/// What a run saw, window by window, and its connections, still open: they close when this is
/// dropped, so the service's open files can be read at the end with the load's connections
/// among them, as in every window before.
#[derive(Debug)]
pub struct Finished {
    pub tallies: Vec<WindowTally>,
    /// Second by second from the schedule's start, by the moment each request was due.
    pub seconds: Vec<SecondTally>,
    /// Held only to be dropped with the result.
    _connections: Vec<Connection>,
}

/// Runs the load on `connections` connections until the schedule ends. A request due before
/// the end is always sent, even late.
pub async fn run(
    target: &Target,
    connections: usize,
    pace: Pace,
    schedule: &Schedule,
    progress: &Arc<Progress>,
) -> anyhow::Result<Finished> {
    let target = Arc::new(target.clone());
    let schedule = Arc::new(schedule.clone());
    let next_due = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(connections);
    for k in 0..connections {
        let connection = Connection::new(Arc::clone(&target), k);
        let (schedule, progress) = (Arc::clone(&schedule), Arc::clone(progress));
        workers.push(tokio::spawn(drive(
            connection,
            Arc::clone(&next_due),
            pace,
            schedule,
            progress,
        )));
    }
    let mut tallies = vec![WindowTally::default(); schedule.boundaries.len()];
    let mut seconds = Vec::new();
    let mut open = Vec::with_capacity(connections);
    for worker in workers {
        let (theirs, their_seconds, connection) = worker.await?;
        for (mine, theirs) in tallies.iter_mut().zip(theirs) {
            mine.merge(theirs);
        }
        merge_seconds(&mut seconds, &their_seconds);
        open.push(connection);
    }
    Ok(Finished {
        tallies,
        seconds,
        _connections: open,
    })
}

/// One connection's requests. Paced, the connections share one schedule: each request is due
/// at its moment of the rate, and whichever connection is free takes the next one due (as a
/// crowd of phones would, and unlike a schedule split between the connections, where a
/// request waits for its own connection while another is idle).
async fn drive(
    mut connection: Connection,
    next_due: Arc<AtomicU64>,
    pace: Pace,
    schedule: Arc<Schedule>,
    progress: Arc<Progress>,
) -> (Vec<WindowTally>, Vec<SecondTally>, Connection) {
    let mut tallies = vec![WindowTally::default(); schedule.boundaries.len()];
    let mut seconds = Vec::new();
    loop {
        let due = match pace {
            Pace::AsAnswered => Instant::now(),
            Pace::Fixed { rate } => {
                let i = next_due.fetch_add(1, Ordering::Relaxed);
                schedule.start + Duration::from_secs_f64(i as f64 / rate)
            }
        };
        let Some(window) = schedule.window_of(due) else {
            break;
        };
        tokio::time::sleep_until(due).await;
        let sent = Instant::now();
        let (kind, outcome) = connection.send_next().await;
        let latency = due.elapsed();
        tallies[window].record(kind, outcome, latency);
        let second = usize::try_from(due.duration_since(schedule.start).as_secs()).unwrap_or(0);
        if seconds.len() <= second {
            seconds.resize(second + 1, SecondTally::default());
        }
        seconds[second].record(kind, latency, sent.elapsed());
        progress.requests.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Expected {
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    (tallies, seconds, connection)
}

/// What a connection's next request is.
#[derive(Debug)]
enum Next {
    Issue,
    Claim(String),
    /// The phone's upload after `sent` of them.
    Upload {
        phone: Box<Phone>,
        sent: usize,
    },
}

/// One keep-alive connection, running one case after another.
#[derive(Debug)]
struct Connection {
    target: Arc<Target>,
    client: HttpClient,
    portal: Portal,
    index: usize,
    cases: u32,
    next: Next,
}

impl Connection {
    fn new(target: Arc<Target>, index: usize) -> Connection {
        let client = HttpClient::new();
        let portal = Portal {
            base_url: target.base_url.trim_end_matches('/').to_owned(),
            token: target.token.clone(),
            client: client.clone(),
        };
        Connection {
            target,
            client,
            portal,
            index,
            cases: 0,
            next: Next::Issue,
        }
    }

    /// Sends the next request of the case; a case whose request failed is given up and the
    /// next request starts a new one.
    async fn send_next(&mut self) -> (Kind, Outcome) {
        match std::mem::replace(&mut self.next, Next::Issue) {
            Next::Issue => (Kind::Issue, self.issue().await),
            Next::Claim(code) => (Kind::Claim, self.claim(&code).await),
            Next::Upload { phone, sent } => (Kind::Upload, self.upload(phone, sent).await),
        }
    }

    async fn issue(&mut self) -> Outcome {
        let bound = self.target.request_bound;
        let Some(reply) = answered(bound, self.portal.request_code(None)).await else {
            return Outcome::Unanswered;
        };
        let code = reply.text();
        let code = code.trim_end();
        if reply.status != StatusCode::OK || code.len() != 10 {
            return Outcome::Unexpected;
        }
        self.next = Next::Claim(code.to_owned());
        Outcome::Expected
    }

    async fn claim(&mut self, code: &str) -> Outcome {
        let mut phone = Phone::with_client(&self.target.base_url, self.client.clone());
        let address = self.case_address().to_string();
        let headers = [("x-forwarded-for", address.as_str())];
        let bound = self.target.request_bound;
        let Some(reply) = answered(bound, phone.send_claim(code, &headers)).await else {
            return Outcome::Unanswered;
        };
        match phone.read_claim(&reply) {
            Ok(claimed)
                if claimed.status == StatusCode::OK
                    && claimed.response.error() == ClaimError::None
                    && phone.server_public.is_some() =>
            {
                self.next = Next::Upload {
                    phone: Box::new(phone),
                    sent: 0,
                };
                Outcome::Expected
            }
            Ok(_) | Err(_) => Outcome::Unexpected,
        }
    }

    async fn upload(&mut self, phone: Box<Phone>, sent: usize) -> Outcome {
        let keys = if sent == 0 { FIRST_UPLOAD_KEYS } else { 1 };
        let Ok(request) = phone.sealed_request(&upload_now(keys)) else {
            return Outcome::Unexpected;
        };
        let bound = self.target.request_bound;
        let Some(reply) = answered(bound, phone.post_upload(request.encode_to_vec())).await else {
            return Outcome::Unanswered;
        };
        match UploadReply::read(&reply) {
            Ok(uploaded)
                if uploaded.status == StatusCode::OK
                    && uploaded.response.error() == UploadError::None =>
            {
                if sent < FOLLOW_UP_UPLOADS {
                    self.next = Next::Upload {
                        phone,
                        sent: sent + 1,
                    };
                }
                Outcome::Expected
            }
            Ok(_) | Err(_) => Outcome::Unexpected,
        }
    }

    /// A private address of the case's own (10.k.c.c for connection k's case c), as the load
    /// balancer would append it.
    fn case_address(&mut self) -> Ipv4Addr {
        self.cases = self.cases.wrapping_add(1);
        let connection = u32::try_from(self.index % 256).unwrap_or(0);
        Ipv4Addr::from(0x0a00_0000 | connection << 16 | (self.cases & 0xffff))
    }
}

/// The reply when a complete one came within `bound`.
async fn answered(
    bound: Duration,
    request: impl Future<Output = anyhow::Result<Reply>>,
) -> Option<Reply> {
    tokio::time::timeout(bound, request).await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_is_one_issue_one_claim_and_fifteen_uploads() {
        assert_eq!(REQUESTS_PER_CASE, 17);
        assert_eq!(
            FIRST_UPLOAD_KEYS + FOLLOW_UP_UPLOADS,
            28,
            "a case must stay within the default quota of 43 keys"
        );
    }

    #[test]
    fn a_second_keeps_the_slowest_of_each_kind_and_splits_service_from_send_delay() {
        let ms = Duration::from_millis;
        let mut second = SecondTally::default();
        second.record(Kind::Upload, ms(900), ms(20));
        second.record(Kind::Upload, ms(30), ms(25));
        second.record(Kind::Issue, ms(40), ms(40));
        let mut other = SecondTally::default();
        other.record(Kind::Claim, ms(700), ms(650));
        let mut merged = vec![SecondTally::default()];
        merge_seconds(&mut merged, &[other, second]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].max_service_us, [0, 650_000, 0]);
        assert_eq!(merged[0].max_send_delay_us, 50_000);
        assert_eq!(merged[1].requests, 3);
        assert_eq!(merged[1].max_latency_us, [40_000, 0, 900_000]);
        assert_eq!(merged[1].max_service_us, [40_000, 0, 25_000]);
        assert_eq!(
            merged[1].max_send_delay_us, 880_000,
            "a request that waited 880 ms for its connection counts as send delay, not service"
        );
    }

    #[tokio::test]
    async fn instants_fall_in_their_window_and_none_after_the_end() {
        let schedule = Schedule::even(3, Duration::from_secs(10));
        let at = |s: u64| schedule.start + Duration::from_secs(s);
        assert_eq!(schedule.window_of(at(0)), Some(0));
        assert_eq!(schedule.window_of(at(9)), Some(0));
        assert_eq!(schedule.window_of(at(10)), Some(1));
        assert_eq!(schedule.window_of(at(29)), Some(2));
        assert_eq!(schedule.window_of(at(30)), None);
        assert_eq!(schedule.end(), at(30));
    }
}
