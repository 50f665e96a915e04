//! kube-proxy's health semantics, for `/healthz`: the agent is healthy when
//! its first sync is done and no change has waited longer than the timeout
//! to reach the datapath. A node whose proxy is wedged (the API delivers
//! changes, the maps never get them) fails its health check; a quiet
//! cluster, where nothing waits, does not.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

#[derive(Debug, Default)]
struct Inner {
    /// The first full sync reached the maps.
    synced: bool,
    /// When the datapath last took in everything known.
    last_updated: Option<SystemTime>,
    /// The oldest change known and not yet in the maps.
    oldest_pending: Option<SystemTime>,
}

#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    inner: Mutex<Inner>,
}

/// What `/healthz` answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub last_updated: Option<SystemTime>,
}

impl Health {
    /// kube-proxy uses twice its sync period.
    pub fn new(timeout: Duration) -> Self {
        Health {
            timeout,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A source learned of a change at `at` that the maps do not have yet.
    pub fn queued(&self, at: SystemTime) {
        let mut i = self.lock();
        if i.oldest_pending.is_none_or(|t| at < t) {
            i.oldest_pending = Some(at);
        }
    }

    /// Everything queued so far is in the maps (`full`: a full sync).
    pub fn updated(&self, at: SystemTime, full: bool) {
        let mut i = self.lock();
        i.oldest_pending = None;
        i.last_updated = Some(at);
        i.synced |= full;
    }

    pub fn verdict(&self, now: SystemTime) -> Verdict {
        let i = self.lock();
        let waiting_too_long = i
            .oldest_pending
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > self.timeout);
        Verdict {
            healthy: i.synced && !waiting_too_long,
            last_updated: i.last_updated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_after_the_first_sync_until_a_change_waits_too_long() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!h.verdict(t0).healthy, "not synced yet");
        h.updated(t0, true);
        assert!(
            h.verdict(t0 + Duration::from_secs(3600)).healthy,
            "quiet is fine"
        );
        h.queued(t0 + Duration::from_secs(10));
        assert!(h.verdict(t0 + Duration::from_secs(30)).healthy);
        assert!(!h.verdict(t0 + Duration::from_secs(71)).healthy);
        h.updated(t0 + Duration::from_secs(72), false);
        assert!(h.verdict(t0 + Duration::from_secs(73)).healthy);
    }

    #[test]
    fn an_incremental_update_alone_does_not_make_it_synced() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH;
        h.updated(t0, false);
        assert!(!h.verdict(t0).healthy);
    }
}
