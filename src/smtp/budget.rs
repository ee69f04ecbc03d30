//! The in-flight budget: one byte count shared by the DATA buffers of all sessions
//! (`server.max_inflight_bytes`, SPEC.md section 9).
//!
//! A session takes a [`Reservation`] when DATA begins and grows it with its buffer; the
//! reservation travels with the finished message to the handler and gives its bytes back
//! when it is dropped. Nothing ever waits for room: a reservation that cannot grow fails at
//! once, and the session refuses that message with 452 4.3.1.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared budget; cheap to clone (every clone is the same budget).
#[derive(Clone)]
pub struct InflightBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u64,
    used: AtomicU64,
}

impl InflightBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        InflightBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicU64::new(0),
            }),
        }
    }

    /// A budget that never runs out (for tools and tests that hold messages of their own).
    pub fn unlimited() -> Self {
        InflightBudget::new(u64::MAX)
    }

    /// The configured limit.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// The bytes reserved now, by all reservations together.
    pub fn in_use(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// An empty reservation, to be grown with [`Reservation::grow_to`].
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: Some(Arc::clone(&self.inner)),
            bytes: 0,
        }
    }

    /// A reservation of `bytes`, or `None` when the budget has not that much left.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let mut reservation = self.reservation();
        reservation.grow_to(bytes).then_some(reservation)
    }
}

impl Inner {
    /// Takes `bytes` more from the budget if they fit.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl fmt::Debug for InflightBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InflightBudget")
            .field("limit", &self.limit())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// Bytes held out of an [`InflightBudget`] until this value is dropped.
pub struct Reservation {
    /// `None` for a reservation outside any budget.
    budget: Option<Arc<Inner>>,
    bytes: u64,
}

impl Reservation {
    /// A reservation that belongs to no budget (a message made outside an SMTP session).
    pub fn detached() -> Self {
        Reservation {
            budget: None,
            bytes: 0,
        }
    }

    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to `total` bytes; false (and unchanged) when the budget has
    /// not that much left. A smaller `total` than held is a no-op that succeeds.
    pub fn grow_to(&mut self, total: u64) -> bool {
        let Some(more) = total.checked_sub(self.bytes).filter(|&m| m > 0) else {
            return true;
        };
        if let Some(budget) = &self.budget
            && !budget.take(more)
        {
            return false;
        }
        self.bytes = total;
        true
    }

    /// Gives every byte back now (the reservation stays usable, empty).
    pub fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .field("detached", &self.budget.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_give_back_on_drop() {
        let budget = InflightBudget::new(100);
        let mut a = budget.try_reserve(60).expect("fits");
        assert_eq!(budget.in_use(), 60);
        assert!(budget.try_reserve(41).is_none());
        assert_eq!(budget.in_use(), 60, "a failed reservation takes nothing");
        let b = budget.try_reserve(40).expect("exactly fills");
        assert!(!a.grow_to(61));
        assert_eq!(a.bytes(), 60);
        drop(b);
        assert!(a.grow_to(100));
        assert!(a.grow_to(10), "shrinking is a no-op");
        assert_eq!(a.bytes(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn release_empties_and_detached_holds_nothing() {
        let budget = InflightBudget::new(10);
        let mut r = budget.try_reserve(10).unwrap();
        r.release();
        assert_eq!(budget.in_use(), 0);
        assert!(r.grow_to(5));
        assert_eq!(budget.in_use(), 5);
        drop(r);
        assert_eq!(budget.in_use(), 0);

        let mut d = Reservation::detached();
        assert!(d.grow_to(u64::MAX));
        drop(d);
    }

    #[test]
    fn no_overflow_near_the_top() {
        let budget = InflightBudget::unlimited();
        let _a = budget.try_reserve(u64::MAX - 1).unwrap();
        assert!(budget.try_reserve(2).is_none());
    }
}
