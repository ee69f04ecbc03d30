//! Readiness (`GET /healthz/ready`): not ready while the relay drains (from the moment a
//! stop is signalled) or while the upstream cannot be reached.
//!
//! The upstream check is real ([`Upstream::probe`](crate::upstream::Upstream::probe):
//! connect and EHLO, or write a file in the `dir:` directory) and its result is kept for
//! [`CHECK_TTL`], so that probes from a load balancer, Kubernetes and a curious operator
//! together cost the upstream at most one connection every two seconds. Probes that arrive
//! while a check runs wait for that check and share its result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one upstream check answers for.
pub const CHECK_TTL: Duration = Duration::from_secs(2);
/// The longest one upstream check may take (never more than `upstream.timeout`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/healthz/ready` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// A stop was signalled: the relay finishes what it has and takes nothing new.
    Draining,
    /// The last upstream check failed, with this error.
    UpstreamUnavailable(String),
    /// Ready, but the account's shared store (Redis) does not answer: each message is
    /// counted as `on_unavailable` says (`local` or `open`).
    Degraded(String),
    /// The shared store does not answer and `on_unavailable = "closed"`: every message
    /// would get `451 4.3.0`.
    SharedUnavailable(String),
}

/// The draining flag and the last upstream check.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    last: tokio::sync::Mutex<Option<Checked>>,
}

#[derive(Debug, Clone)]
struct Checked {
    at: Instant,
    result: Result<(), String>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// From now on, not ready (there is no way back: the process is stopping).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready, draining, or the upstream unavailable; `check` runs only when the last
    /// result is older than [`CHECK_TTL`], and by one caller at a time.
    pub async fn readiness<F, Fut, E>(&self, check: F) -> Readiness
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if self.is_draining() {
            return Readiness::Draining;
        }
        let result = {
            let mut last = self.last.lock().await;
            match &*last {
                Some(checked) if checked.at.elapsed() < CHECK_TTL => checked.result.clone(),
                previous => {
                    let result = check().await.map_err(|e| e.to_string());
                    let was_ok = previous.as_ref().map(|p| p.result.is_ok());
                    match (&result, was_ok) {
                        (Err(e), Some(true) | None) => {
                            tracing::warn!(error = %e, "upstream check failed: not ready");
                        }
                        (Ok(()), Some(false)) => {
                            tracing::info!("upstream check passed again: ready");
                        }
                        _ => {}
                    }
                    *last = Some(Checked {
                        at: Instant::now(),
                        result: result.clone(),
                    });
                    result
                }
            }
        };
        if self.is_draining() {
            return Readiness::Draining;
        }
        match result {
            Ok(()) => Readiness::Ready,
            Err(e) => Readiness::UpstreamUnavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_probes_share_one_check_and_the_result_is_kept() {
        let health = Arc::new(Health::new());
        let checks = Arc::new(AtomicUsize::new(0));
        let mut probes = Vec::new();
        for _ in 0..10 {
            let (health, checks) = (Arc::clone(&health), Arc::clone(&checks));
            probes.push(tokio::spawn(async move {
                health
                    .readiness(|| async {
                        checks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<(), _>("connection refused")
                    })
                    .await
            }));
        }
        for probe in probes {
            assert_eq!(
                probe.await.unwrap(),
                Readiness::UpstreamUnavailable("connection refused".into())
            );
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn draining_wins_without_a_check() {
        let health = Health::new();
        health.start_draining();
        let checks = AtomicUsize::new(0);
        let readiness = health
            .readiness(|| async {
                checks.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            })
            .await;
        assert_eq!(readiness, Readiness::Draining);
        assert_eq!(checks.load(Ordering::SeqCst), 0);
    }
}
