//! The account's sending quotas (SPEC 4.5): the recipients of accepted messages, counted in
//! two sliding windows, one for `max_send_rate` and one of 24 hours for `max_24_hour_send`,
//! as SES counts them ("quotas are based on the number of recipients, rather than on the
//! number of messages").
//!
//! A message's recipients are reserved when the policy has accepted it, before the
//! upstream sees it, so that concurrent messages cannot both take the last place; the
//! reservation is given back when the upstream does not take the message. Memory is bounded
//! whatever the traffic: counts are kept per slot (1/100 of the rate window, one minute of
//! the day), at most about 100 and 1,440 of them.
//!
//! Mailbox-simulator recipients are not counted: SES introduced the simulator so that tests
//! do not use up the sending quota.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AccountLimits;

/// The 24-hour window and its slot.
const DAY: Duration = Duration::from_secs(24 * 3600);
const DAY_SLOT: Duration = Duration::from_secs(60);

/// Slots per rate window.
const RATE_SLOTS: u32 = 100;

/// Which limit a message would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttle {
    #[error("Maximum sending rate exceeded.")]
    Rate,
    #[error("Daily message quota exceeded.")]
    Quota,
}

/// Recipients counted for one accepted message; [`Quotas::refund`] gives them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    recipients: u64,
    day_slot: Option<Instant>,
    rate_slot: Option<Instant>,
}

impl Reservation {
    /// A reservation of nothing (no recipient counted).
    pub const NONE: Reservation = Reservation {
        recipients: 0,
        day_slot: None,
        rate_slot: None,
    };
}

/// Counts in slots, oldest first: `(slot start, recipients)`.
#[derive(Debug, Default)]
struct Window {
    slots: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    /// Drops the slots that started `length` or more before `now`.
    fn expire(&mut self, now: Instant, length: Duration) {
        while let Some(&(start, n)) = self.slots.front() {
            if now.saturating_duration_since(start) < length {
                break;
            }
            self.slots.pop_front();
            self.total -= n;
        }
    }

    /// Adds `n` to the newest slot when it started less than `slot` ago, else to a new
    /// slot starting now; returns the slot's start.
    fn add(&mut self, now: Instant, slot: Duration, n: u64) -> Instant {
        self.total += n;
        if let Some((start, count)) = self.slots.back_mut()
            && now.saturating_duration_since(*start) < slot
        {
            *count += n;
            return *start;
        }
        self.slots.push_back((now, n));
        now
    }

    /// Takes `n` back from the slot that started at `start`, if it is still counted.
    fn remove(&mut self, start: Instant, n: u64) {
        if let Some((_, count)) = self.slots.iter_mut().find(|(s, _)| *s == start) {
            let taken = n.min(*count);
            *count -= taken;
            self.total -= taken;
        }
    }
}

#[derive(Debug, Default)]
struct Windows {
    day: Window,
    rate: Window,
}

/// The account's counters, shared by every session and API call of the process.
#[derive(Debug, Default)]
pub struct Quotas {
    windows: Mutex<Windows>,
}

/// The rate window and how many recipients it allows: one second and `rate` recipients,
/// or, for a rate under 1 per second, `1 / rate` seconds and one recipient.
fn rate_window(rate: f64) -> (Duration, f64) {
    if rate >= 1.0 {
        (Duration::from_secs(1), rate)
    } else {
        (
            Duration::from_secs_f64((1.0 / rate).min(DAY.as_secs_f64())),
            1.0,
        )
    }
}

impl Quotas {
    pub fn new() -> Quotas {
        Quotas::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `recipients` if the limits allow them now. The daily quota is checked first:
    /// when it is spent, waiting a second does not help. A message with more recipients
    /// than the rate allows in a whole window is let through when the window is empty
    /// (SES allows short bursts; it could never be sent otherwise).
    pub fn reserve(
        &self,
        limits: &AccountLimits,
        recipients: u64,
    ) -> Result<Reservation, Throttle> {
        self.reserve_at(limits, recipients, Instant::now())
    }

    fn reserve_at(
        &self,
        limits: &AccountLimits,
        recipients: u64,
        now: Instant,
    ) -> Result<Reservation, Throttle> {
        if recipients == 0 {
            return Ok(Reservation::NONE);
        }
        let mut w = self.lock();
        w.day.expire(now, DAY);
        if limits.max_24_hour_send > 0
            && w.day.total.saturating_add(recipients) > limits.max_24_hour_send
        {
            return Err(Throttle::Quota);
        }
        let mut rate_slot = None;
        if limits.max_send_rate > 0.0 {
            let (length, allowed) = rate_window(limits.max_send_rate);
            w.rate.expire(now, length);
            if w.rate.total > 0 && (w.rate.total + recipients) as f64 > allowed {
                return Err(Throttle::Rate);
            }
            rate_slot = Some(w.rate.add(now, length / RATE_SLOTS, recipients));
        }
        let day_slot = Some(w.day.add(now, DAY_SLOT, recipients));
        Ok(Reservation {
            recipients,
            day_slot,
            rate_slot,
        })
    }

    /// Gives back what `reservation` counted: the upstream did not take the message.
    pub fn refund(&self, reservation: Reservation) {
        if reservation.recipients == 0 {
            return;
        }
        let mut w = self.lock();
        if let Some(start) = reservation.day_slot {
            w.day.remove(start, reservation.recipients);
        }
        if let Some(start) = reservation.rate_slot {
            w.rate.remove(start, reservation.recipients);
        }
    }

    /// Recipients counted in the last 24 hours (`SentLast24Hours`).
    pub fn sent_last_24_hours(&self) -> u64 {
        let mut w = self.lock();
        w.day.expire(Instant::now(), DAY);
        w.day.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, day: u64) -> AccountLimits {
        AccountLimits {
            max_send_rate: rate,
            max_24_hour_send: day,
            suppression_file: None,
            shared: None,
        }
    }

    #[test]
    fn no_limits_count_but_never_refuse() {
        let q = Quotas::new();
        let t = Instant::now();
        for _ in 0..1000 {
            q.reserve_at(&limits(0.0, 0), 50, t).unwrap();
        }
        assert_eq!(q.lock().day.total, 50_000);
        assert_eq!(q.lock().day.slots.len(), 1);
        assert!(q.lock().rate.slots.is_empty());
    }

    #[test]
    fn the_rate_counts_recipients_in_a_sliding_second() {
        let q = Quotas::new();
        let l = limits(3.0, 0);
        let t = Instant::now();
        q.reserve_at(&l, 2, t).unwrap();
        q.reserve_at(&l, 1, t + Duration::from_millis(100)).unwrap();
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_millis(900)),
            Err(Throttle::Rate)
        );
        // The first two recipients leave the window one second after they came.
        q.reserve_at(&l, 2, t + Duration::from_millis(1000))
            .unwrap();
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_millis(1050)),
            Err(Throttle::Rate)
        );
    }

    #[test]
    fn a_message_larger_than_the_rate_passes_an_empty_window() {
        let q = Quotas::new();
        let l = limits(1.0, 0);
        let t = Instant::now();
        q.reserve_at(&l, 5, t).unwrap();
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_millis(500)),
            Err(Throttle::Rate)
        );
        q.reserve_at(&l, 1, t + Duration::from_millis(1000))
            .unwrap();
    }

    #[test]
    fn a_rate_under_one_per_second_spaces_messages_out() {
        let q = Quotas::new();
        let l = limits(0.5, 0);
        let t = Instant::now();
        q.reserve_at(&l, 1, t).unwrap();
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_millis(1500)),
            Err(Throttle::Rate)
        );
        q.reserve_at(&l, 1, t + Duration::from_millis(2000))
            .unwrap();
    }

    #[test]
    fn the_daily_quota_slides_over_24_hours_and_comes_first() {
        let q = Quotas::new();
        let l = limits(1.0, 3);
        let t = Instant::now();
        q.reserve_at(&l, 2, t).unwrap();
        q.reserve_at(&l, 1, t + Duration::from_secs(3600)).unwrap();
        // Both limits are passed here: the quota is named.
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_secs(3600)),
            Err(Throttle::Quota)
        );
        assert_eq!(
            q.reserve_at(&l, 1, t + Duration::from_secs(86_399)),
            Err(Throttle::Quota)
        );
        q.reserve_at(&l, 2, t + DAY).unwrap();
        assert_eq!(
            q.reserve_at(&l, 1, t + DAY + Duration::from_secs(10)),
            Err(Throttle::Quota)
        );
    }

    #[test]
    fn a_message_over_the_whole_quota_is_refused() {
        let q = Quotas::new();
        assert_eq!(
            q.reserve_at(&limits(0.0, 200), 201, Instant::now()),
            Err(Throttle::Quota)
        );
        assert_eq!(q.lock().day.total, 0);
    }

    #[test]
    fn a_refund_gives_the_places_back() {
        let q = Quotas::new();
        let l = limits(2.0, 2);
        let t = Instant::now();
        let r = q.reserve_at(&l, 2, t).unwrap();
        assert_eq!(q.reserve_at(&l, 1, t), Err(Throttle::Quota));
        q.refund(r);
        q.reserve_at(&l, 2, t).unwrap();
        q.refund(Reservation::NONE);
    }

    #[test]
    fn slots_stay_bounded() {
        let q = Quotas::new();
        let l = limits(1_000_000.0, 0);
        let t = Instant::now();
        for i in 0..200_000u64 {
            q.reserve_at(&l, 1, t + Duration::from_micros(i * 500))
                .unwrap();
        }
        let w = q.lock();
        assert!(
            w.rate.slots.len() <= RATE_SLOTS as usize + 1,
            "{}",
            w.rate.slots.len()
        );
        assert!(w.day.slots.len() <= 2);
        assert_eq!(w.day.total, 200_000);
    }
}
