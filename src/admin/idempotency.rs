//! SendEmail idempotency (SPEC 6): botocore and the AWS SDK for JavaScript send one
//! `amz-sdk-invocation-id` header value with every attempt of one call, retries included.
//! The first attempt with a given id runs; any other attempt with the same id gets the
//! first one's answer, waiting for it while it is still in progress. So a slow upstream
//! that makes the SDK time out and retry does not deliver the message twice.
//!
//! - **The key** is a SHA-256 of the invocation id and the request body together: a reused
//!   id with another body (a client that sends a fixed header value, say) is another call,
//!   sent on its own, and never answered with another message's result. The SDKs resend
//!   the very same body on a retry, so their retries always match.
//! - **What is kept**: every answer except the retryable failures (5xx: the upstream
//!   unavailable, a failure of sesrelay's own; and 429 throttling). Those are handed to
//!   the attempts already waiting and then forgotten, so that a retry after a transient
//!   failure really tries again.
//! - **For how long**: [`WINDOW`] (15 minutes) after the first attempt arrived, and at most
//!   [`CAPACITY`] calls; past it the oldest are forgotten first.
//!
//! The cache is generic over the answer, so that it can be tested on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::error::ApiError;
use crate::shared::SharedStore;

/// How long an answer is kept after its call's first attempt arrived: 15 minutes, far
/// longer than any SDK's retries of one call take.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// At most this many calls are remembered; then the oldest is forgotten first.
pub const CAPACITY: usize = 10_000;
/// The header the SDKs send, the same value on every attempt of one call.
pub const HEADER: &str = "amz-sdk-invocation-id";
/// Bodies larger than this are hashed on a blocking thread.
const INLINE_HASH_LIMIT: usize = 1024 * 1024;

/// A call's key: SHA-256 of its invocation id and its body.
pub type Key = [u8; 32];

/// The invocation id of a request, when it has one (non-empty, visible ASCII).
pub fn invocation_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The key of a call: the invocation id and the body, hashed together (the id's length
/// first, so that no id and body pair can pass for another). A large body is hashed on a
/// blocking thread.
pub async fn key(invocation_id: &str, body: &bytes::Bytes) -> Key {
    let id = invocation_id.to_owned();
    if body.len() <= INLINE_HASH_LIMIT {
        return hash(&id, body);
    }
    let shared = body.clone(); // another handle on the same bytes
    match tokio::task::spawn_blocking(move || hash(&id, &shared)).await {
        Ok(key) => key,
        Err(_) => hash(invocation_id, body),
    }
}

fn hash(invocation_id: &str, body: &[u8]) -> Key {
    let mut hasher = Sha256::new();
    hasher.update((invocation_id.len() as u64).to_be_bytes());
    hasher.update(invocation_id.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// The remembered calls and their answers.
pub struct Cache<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    window: Duration,
    capacity: usize,
    state: Mutex<State<T>>,
}

struct State<T> {
    next_seq: u64,
    entries: HashMap<Key, Entry<T>>,
    /// The entries in the order they came: sequence number → key.
    order: BTreeMap<u64, Key>,
}

struct Entry<T> {
    seq: u64,
    created: Instant,
    /// `None` while the first attempt runs, then its answer.
    answer: watch::Receiver<Option<T>>,
}

/// What [`Cache::claim`] found.
pub enum Claim<T> {
    /// The first attempt of this call: run it, then [`Pending::finish`].
    First(Pending<T>),
    /// Another attempt of a call already seen: [`Waiter::wait`] gives its answer.
    Retry(Waiter<T>),
}

/// The first attempt's duty: to give its answer. Dropped without one (its task panicked),
/// the call is forgotten and the attempts waiting for it get `None`.
pub struct Pending<T> {
    shared: Arc<Shared<T>>,
    key: Key,
    seq: u64,
    answer: Option<watch::Sender<Option<T>>>,
}

/// An attempt waiting for the first one's answer.
pub struct Waiter<T> {
    answer: watch::Receiver<Option<T>>,
}

impl<T: Clone> Cache<T> {
    /// A cache keeping answers `window` long, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Cache<T> {
        Cache {
            shared: Arc::new(Shared {
                window,
                capacity: capacity.max(1),
                state: Mutex::new(State {
                    next_seq: 0,
                    entries: HashMap::new(),
                    order: BTreeMap::new(),
                }),
            }),
        }
    }

    /// The first attempt of the call `key` gets [`Claim::First`] (and the call is
    /// remembered from now on); any later attempt [`Claim::Retry`].
    pub fn claim(&self, key: Key) -> Claim<T> {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.expire(now, self.shared.window);
        if let Some(entry) = state.entries.get(&key) {
            return Claim::Retry(Waiter {
                answer: entry.answer.clone(),
            });
        }
        let (sender, receiver) = watch::channel(None);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.entries.insert(
            key,
            Entry {
                seq,
                created: now,
                answer: receiver,
            },
        );
        state.order.insert(seq, key);
        while state.entries.len() > self.shared.capacity {
            state.forget_oldest();
        }
        Claim::First(Pending {
            shared: Arc::clone(&self.shared),
            key,
            seq,
            answer: Some(sender),
        })
    }

    /// How many calls are remembered (finished or in progress).
    pub fn len(&self) -> usize {
        self.shared.lock().entries.len()
    }

    /// True when no call is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is consistent at every unlock: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the call `key` if it is still the attempt numbered `seq`.
    fn forget(&self, key: &Key, seq: u64) {
        let mut state = self.lock();
        if state.entries.get(key).is_some_and(|e| e.seq == seq) {
            state.entries.remove(key);
            state.order.remove(&seq);
        }
    }
}

impl<T> State<T> {
    /// Forgets the calls whose first attempt came `window` ago or longer.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((_, key)) = self.order.first_key_value() {
            let expired = self
                .entries
                .get(key)
                .is_none_or(|e| now.saturating_duration_since(e.created) >= window);
            if !expired {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            self.entries.remove(&key);
        }
    }
}

impl<T> Pending<T> {
    /// Hands `answer` to the attempts waiting for it; with `keep`, later attempts get it
    /// too, else the call is forgotten first, so that the next attempt runs again.
    pub fn finish(mut self, answer: T, keep: bool) {
        if !keep {
            self.shared.forget(&self.key, self.seq);
        }
        if let Some(sender) = self.answer.take() {
            sender.send_replace(Some(answer));
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if self.answer.is_some() {
            // No answer: the attempts waiting get `None`, and the next one runs again.
            self.shared.forget(&self.key, self.seq);
        }
    }
}

impl<T: Clone> Waiter<T> {
    /// The first attempt's answer, once it has one; `None` when it ended without one.
    pub async fn wait(mut self) -> Option<T> {
        match self.answer.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            Err(_) => None,
        }
    }
}

/// What the shared store says of an attempt ([`shared_claim`]).
pub enum SharedClaim {
    /// The first attempt of the call on any replica: run it, then [`shared_finish`].
    First,
    /// The call's answer, from whichever replica ran it.
    Answer(Result<String, ApiError>),
    /// The invocation id was used for another request body.
    Conflict,
    /// Redis did not answer: keep idempotency in this process instead.
    Unavailable(String),
}

/// How often a waiting attempt looks at the shared record again.
const SHARED_POLL: Duration = Duration::from_millis(25);

/// A call's record on Redis (JSON): the call's key (the id and the body, hashed) and, once
/// the first attempt has finished, its answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedRecord {
    call: String,
    #[serde(default)]
    answer: Option<StoredAnswer>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAnswer {
    status: u16,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The shared record's Redis key for `invocation`: the id hashed, so that no header byte
/// reaches a key name.
fn shared_key(store: &SharedStore, invocation: &str) -> String {
    store.idempotency_key(&hex::encode(Sha256::digest(invocation.as_bytes())))
}

/// The first attempt of the call `key` (id `invocation`) on any replica, or the answer of
/// the one that was, waiting up to `wait` for it while it runs (`SET NX PX` then polling).
pub async fn shared_claim(
    store: &SharedStore,
    invocation: &str,
    key: &Key,
    wait: Duration,
) -> SharedClaim {
    let redis_key = shared_key(store, invocation);
    let call = hex::encode(key);
    let pending = serde_json::to_string(&SharedRecord {
        call: call.clone(),
        answer: None,
    })
    .unwrap_or_default();
    // A first attempt whose replica died leaves its mark this long.
    let pending_ttl = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let deadline = Instant::now() + wait;
    loop {
        let claimed = store
            .call(|mut connection| {
                let (redis_key, pending) = (redis_key.clone(), pending.clone());
                async move {
                    redis::cmd("SET")
                        .arg(redis_key)
                        .arg(pending)
                        .arg("NX")
                        .arg("PX")
                        .arg(pending_ttl)
                        .query_async::<Option<String>>(&mut connection)
                        .await
                }
            })
            .await;
        match claimed {
            Err(e) => return SharedClaim::Unavailable(e),
            Ok(Some(_)) => return SharedClaim::First,
            Ok(None) => {}
        }
        // Another attempt has the call: read its record until it holds an answer.
        loop {
            let record = store
                .call(|mut connection| {
                    let redis_key = redis_key.clone();
                    async move {
                        redis::cmd("GET")
                            .arg(redis_key)
                            .query_async::<Option<String>>(&mut connection)
                            .await
                    }
                })
                .await;
            let record = match record {
                Err(e) => return SharedClaim::Unavailable(e),
                // Gone: the first attempt failed in a way a retry may mend. Claim again.
                Ok(None) => break,
                Ok(Some(text)) => serde_json::from_str::<SharedRecord>(&text).ok(),
            };
            let Some(record) = record else {
                return SharedClaim::Unavailable(
                    "an idempotency record that is not sesrelay's".into(),
                );
            };
            if record.call != call {
                return SharedClaim::Conflict;
            }
            if let Some(answer) = record.answer {
                return SharedClaim::Answer(match answer.message_id {
                    Some(id) if answer.status == 200 => Ok(id),
                    _ => Err(ApiError::from_parts(
                        answer.status,
                        answer.code.as_deref().unwrap_or_default(),
                        answer.message.as_deref().unwrap_or_default(),
                    )
                    .unwrap_or_else(|| {
                        ApiError::internal("The first attempt's answer cannot be read.")
                    })),
                });
            }
            if Instant::now() >= deadline {
                return SharedClaim::Answer(Err(ApiError::service_unavailable(
                    "The first attempt of this call is still running; try again.",
                )));
            }
            tokio::time::sleep(SHARED_POLL).await;
        }
    }
}

/// The first attempt's end: with `keep`, its answer is stored for [`WINDOW`] for every
/// later attempt on any replica; without, the record is removed so that a retry runs again.
pub async fn shared_finish(
    store: &SharedStore,
    invocation: &str,
    key: &Key,
    answer: &Result<String, ApiError>,
    keep: bool,
) {
    let redis_key = shared_key(store, invocation);
    let result = if keep {
        let stored = match answer {
            Ok(id) => StoredAnswer {
                status: 200,
                message_id: Some(id.clone()),
                code: None,
                message: None,
            },
            Err(e) => StoredAnswer {
                status: e.status.as_u16(),
                message_id: None,
                code: Some(e.code.to_string()),
                message: Some(e.message.clone()),
            },
        };
        let record = serde_json::to_string(&SharedRecord {
            call: hex::encode(key),
            answer: Some(stored),
        })
        .unwrap_or_default();
        let ttl = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
        store
            .call(|mut connection| async move {
                redis::cmd("SET")
                    .arg(redis_key)
                    .arg(record)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
    } else {
        store
            .call(|mut connection| async move {
                redis::cmd("DEL")
                    .arg(redis_key)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "send-email's answer could not be kept on Redis: a retry on another replica may send again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> Key {
        [n; 32]
    }

    #[test]
    fn the_key_covers_the_id_and_the_body() {
        assert_eq!(hash("id-1", b"body"), hash("id-1", b"body"));
        assert_ne!(hash("id-1", b"body"), hash("id-2", b"body"));
        assert_ne!(hash("id-1", b"body"), hash("id-1", b"other body"));
        // The id's length is hashed: moving bytes between id and body changes the key.
        assert_ne!(hash("ab", b"c"), hash("a", b"bc"));
    }

    #[test]
    fn invocation_ids_are_read_from_the_header() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(invocation_id(&headers), None);
        headers.insert(HEADER, " ".parse().unwrap());
        assert_eq!(invocation_id(&headers), None);
        headers.insert(
            "Amz-Sdk-Invocation-Id",
            "3b3f6b5e-0000-4000-8000-000000000001".parse().unwrap(),
        );
        assert_eq!(
            invocation_id(&headers),
            Some("3b3f6b5e-0000-4000-8000-000000000001")
        );
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_and_waits_for_it() {
        let cache: Cache<String> = Cache::new(WINDOW, CAPACITY);
        let Claim::First(first) = cache.claim(k(1)) else {
            panic!("the first attempt runs");
        };
        let Claim::Retry(early) = cache.claim(k(1)) else {
            panic!("an attempt while the first runs waits");
        };
        let waiting = tokio::spawn(early.wait());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        first.finish("id-1".to_owned(), true);
        assert_eq!(waiting.await.unwrap().as_deref(), Some("id-1"));
        let Claim::Retry(late) = cache.claim(k(1)) else {
            panic!("a later attempt is answered");
        };
        assert_eq!(late.wait().await.as_deref(), Some("id-1"));
        // Another key is another call.
        assert!(matches!(cache.claim(k(2)), Claim::First(_)));
    }

    #[tokio::test]
    async fn an_answer_not_kept_reaches_the_waiting_attempts_only() {
        let cache: Cache<&'static str> = Cache::new(WINDOW, CAPACITY);
        let Claim::First(first) = cache.claim(k(1)) else {
            panic!()
        };
        let Claim::Retry(waiting) = cache.claim(k(1)) else {
            panic!()
        };
        first.finish("503", false);
        assert_eq!(waiting.wait().await, Some("503"));
        assert!(cache.is_empty());
        assert!(matches!(cache.claim(k(1)), Claim::First(_)));
    }

    #[tokio::test]
    async fn a_first_attempt_dropped_without_an_answer_is_forgotten() {
        let cache: Cache<u32> = Cache::new(WINDOW, CAPACITY);
        let Claim::First(first) = cache.claim(k(1)) else {
            panic!()
        };
        let Claim::Retry(waiting) = cache.claim(k(1)) else {
            panic!()
        };
        drop(first);
        assert_eq!(waiting.wait().await, None);
        assert!(matches!(cache.claim(k(1)), Claim::First(_)));
    }

    #[test]
    fn the_oldest_call_goes_first_past_the_capacity() {
        let cache: Cache<u32> = Cache::new(WINDOW, 2);
        for n in 1..=3 {
            match cache.claim(k(n)) {
                Claim::First(p) => p.finish(u32::from(n), true),
                Claim::Retry(_) => panic!("{n} is new"),
            }
        }
        assert_eq!(cache.len(), 2);
        assert!(matches!(cache.claim(k(3)), Claim::Retry(_)));
        assert!(matches!(cache.claim(k(2)), Claim::Retry(_)));
        // 1 was forgotten: it runs again, and now 2 is the oldest and goes.
        match cache.claim(k(1)) {
            Claim::First(p) => p.finish(1, true),
            Claim::Retry(_) => panic!("1 was forgotten"),
        }
        assert_eq!(cache.len(), 2);
        assert!(matches!(cache.claim(k(3)), Claim::Retry(_)));
        assert!(matches!(cache.claim(k(1)), Claim::Retry(_)));
        assert!(matches!(cache.claim(k(2)), Claim::First(_)));
    }

    #[test]
    fn answers_expire_after_the_window() {
        let cache: Cache<u32> = Cache::new(Duration::from_millis(50), CAPACITY);
        let Claim::First(first) = cache.claim(k(1)) else {
            panic!()
        };
        first.finish(1, true);
        assert!(matches!(cache.claim(k(1)), Claim::Retry(_)));
        std::thread::sleep(Duration::from_millis(60));
        let Claim::First(again) = cache.claim(k(1)) else {
            panic!("an expired call runs again")
        };
        assert_eq!(cache.len(), 1);
        drop(again);
        assert!(cache.is_empty());
    }
}
