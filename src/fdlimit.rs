//! The process's file-descriptor budget (`RLIMIT_NOFILE`).
//!
//! At start the soft limit is raised to the hard limit, as Postfix and nginx do: the soft
//! limit is often a historical 1024 while the hard limit allows far more, and every SMTP
//! session, upstream connection and admin client holds a descriptor. What the admin listener
//! may hold is then derived from the budget ([`admin_connection_cap`]), so that HTTP clients
//! can never take the descriptors the SMTP listener needs.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the soft limit in force
/// afterwards (`None`: unlimited). A refusal is logged, never fatal: the relay runs within
/// the limit it has.
pub fn raise_nofile_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return limit.current;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(
                from = ?limit.current,
                to = ?limit.maximum,
                "raised the open-file limit to its hard limit"
            );
            limit.maximum
        }
        Err(e) => {
            tracing::warn!(
                limit = ?limit.current,
                error = %e,
                "cannot raise the open-file limit; running within the current one"
            );
            limit.current
        }
    }
}

/// The soft `RLIMIT_NOFILE` now in force (`None`: unlimited).
pub fn nofile_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Connections the admin listener holds at most, given a descriptor limit: one eighth of
/// the budget, at least 4 and at most 256. Under `ulimit -n 256` that is 32, leaving over
/// 200 descriptors to SMTP sessions and their upstream connections; with the common hard
/// limits (tens of thousands and more) it is 256, far more than an operator's API clients
/// need.
pub fn admin_connection_cap(limit: Option<u64>) -> usize {
    const MIN: u64 = 4;
    const MAX: u64 = 256;
    let cap = limit.map_or(MAX, |n| (n / 8).clamp(MIN, MAX));
    usize::try_from(cap).unwrap_or(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_cap_follows_the_budget() {
        assert_eq!(admin_connection_cap(Some(256)), 32);
        assert_eq!(admin_connection_cap(Some(16)), 4);
        assert_eq!(admin_connection_cap(Some(0)), 4);
        assert_eq!(admin_connection_cap(Some(1024)), 128);
        assert_eq!(admin_connection_cap(Some(1 << 20)), 256);
        assert_eq!(admin_connection_cap(None), 256);
    }

    #[test]
    fn raising_never_lowers() {
        let before = nofile_limit();
        let after = raise_nofile_limit();
        assert!(after.is_none() || after >= before);
    }
}
