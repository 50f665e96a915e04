//! The allocator itself: which owner holds which address of the pod range.
//! Pure (no files, no locks), so every rule is tested here on its own.
//!
//! Addresses go round-robin: the search for a free one starts after the last
//! address handed out, not at the bottom of the range. A pod that just died
//! may still have conntrack entries or neighbours' ARP entries pointing at its
//! address; handing that address straight to the next pod would send it the
//! dead pod's traffic. host-local IPAM does the same.

use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
};

use super::{IpamError, Ipv4Cidr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    cidr: Ipv4Cidr,
    /// Owner (the CNI's container id and interface name) -> its address.
    by_owner: BTreeMap<String, Ipv4Addr>,
    /// The same addresses, for the free-address search.
    in_use: HashSet<Ipv4Addr>,
    /// The address handed out last; the next search starts after it.
    last: Option<Ipv4Addr>,
}

impl Pool {
    pub fn new(cidr: Ipv4Cidr) -> Self {
        Self {
            cidr,
            by_owner: BTreeMap::new(),
            in_use: HashSet::new(),
            last: None,
        }
    }

    /// A pool as it was saved. `Err` says what is wrong with it: an address
    /// outside the pod range (the gateway included) or held twice.
    pub fn from_parts(
        cidr: Ipv4Cidr,
        by_owner: BTreeMap<String, Ipv4Addr>,
        last: Option<Ipv4Addr>,
    ) -> Result<Self, String> {
        let mut in_use = HashSet::with_capacity(by_owner.len());
        for (owner, &addr) in &by_owner {
            if !cidr.is_pod_address(addr) {
                return Err(format!(
                    "{owner} holds {addr}, which is not a pod address of {cidr}"
                ));
            }
            if !in_use.insert(addr) {
                return Err(format!("{addr} is held by more than one owner"));
            }
        }
        // A stray `last` only moves where the next search starts; drop it
        // rather than refuse the file.
        let last = last.filter(|a| cidr.is_pod_address(*a));
        Ok(Self {
            cidr,
            by_owner,
            in_use,
            last,
        })
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.by_owner
    }

    pub fn last(&self) -> Option<Ipv4Addr> {
        self.last
    }

    pub fn used(&self) -> u64 {
        self.by_owner.len() as u64
    }

    /// The address of `owner`: the one it already holds (a retried CNI ADD
    /// gets the same answer), else the first free one after the last handed
    /// out, wrapping round to the bottom of the range.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(&addr) = self.by_owner.get(owner) {
            return Ok(addr);
        }
        let (lo, hi) = self.cidr.pod_range();
        let start = match self.last.map(u32::from) {
            Some(last) if last < hi => last + 1,
            _ => lo,
        };
        let addr = (start..=hi)
            .chain(lo..start)
            .map(Ipv4Addr::from)
            .find(|a| !self.in_use.contains(a))
            .ok_or(IpamError::Exhausted {
                cidr: self.cidr,
                capacity: self.cidr.pod_capacity(),
            })?;
        self.by_owner.insert(owner.to_string(), addr);
        self.in_use.insert(addr);
        self.last = Some(addr);
        Ok(addr)
    }

    /// Frees the address of `owner`, if it holds one: an owner we do not know
    /// is not an error (CNI DEL must be idempotent).
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let addr = self.by_owner.remove(owner)?;
        self.in_use.remove(&addr);
        Some(addr)
    }

    /// Frees every address whose owner is not in `keep` (CNI GC) and returns
    /// what was freed.
    pub fn retain(&mut self, keep: &HashSet<String>) -> Vec<(String, Ipv4Addr)> {
        let gone: Vec<String> = self
            .by_owner
            .keys()
            .filter(|o| !keep.contains(*o))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|o| self.release(&o).map(|a| (o, a)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> Pool {
        Pool::new(cidr.parse().unwrap())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn network_gateway_and_broadcast_are_never_handed_out() {
        // A /29: .0 network, .1 gateway, .2-.6 pods, .7 broadcast.
        let mut p = pool("10.0.0.0/29");
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| p.allocate(&format!("c{i}/eth0")).unwrap())
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
        assert_eq!(got, want);
        assert_eq!(p.used(), 5);
    }

    #[test]
    fn allocate_is_idempotent_per_owner() {
        let mut p = pool("10.244.0.0/24");
        let a = p.allocate("abc/eth0").unwrap();
        assert_eq!(p.allocate("abc/eth0").unwrap(), a);
        // Another interface of the same container is another owner.
        assert_ne!(p.allocate("abc/net1").unwrap(), a);
        assert_eq!(p.used(), 2);
    }

    #[test]
    fn releasing_an_unknown_owner_is_fine() {
        let mut p = pool("10.244.0.0/24");
        assert_eq!(p.release("nobody/eth0"), None);
        let a = p.allocate("abc/eth0").unwrap();
        assert_eq!(p.release("abc/eth0"), Some(a));
        assert_eq!(p.release("abc/eth0"), None);
        assert_eq!(p.used(), 0);
    }

    #[test]
    fn exhaustion_names_the_range_and_its_size() {
        let mut p = pool("10.0.0.0/30");
        assert_eq!(p.allocate("a/eth0").unwrap(), ip("10.0.0.2"));
        let err = p.allocate("b/eth0").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { capacity: 1, .. }));
        let msg = err.to_string();
        assert!(msg.contains("10.0.0.0/30") && msg.contains('1'), "{msg}");
        // The failed owner got nothing; the holder still has its address.
        assert_eq!(p.used(), 1);
        assert_eq!(p.allocate("a/eth0").unwrap(), ip("10.0.0.2"));
        // Freeing makes room again.
        p.release("a/eth0");
        assert_eq!(p.allocate("b/eth0").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn retain_frees_every_owner_not_kept() {
        let mut p = pool("10.244.0.0/24");
        for o in ["a/eth0", "b/eth0", "c/eth0"] {
            p.allocate(o).unwrap();
        }
        let keep: HashSet<String> = ["b/eth0".to_string(), "zz/eth0".to_string()].into();
        let freed = p.retain(&keep);
        assert_eq!(
            freed,
            vec![
                ("a/eth0".to_string(), ip("10.244.0.2")),
                ("c/eth0".to_string(), ip("10.244.0.4")),
            ]
        );
        assert_eq!(p.allocations().keys().collect::<Vec<_>>(), ["b/eth0"]);
        assert!(p.retain(&keep).is_empty());
    }

    #[test]
    fn a_freed_address_is_not_reused_at_once() {
        let mut p = pool("10.0.0.0/29");
        assert_eq!(p.allocate("a").unwrap(), ip("10.0.0.2"));
        assert_eq!(p.allocate("b").unwrap(), ip("10.0.0.3"));
        p.release("b");
        // .3 was just freed: the next pod gets .4, not .3.
        assert_eq!(p.allocate("c").unwrap(), ip("10.0.0.4"));
        p.release("a");
        assert_eq!(p.allocate("d").unwrap(), ip("10.0.0.5"));
        assert_eq!(p.allocate("e").unwrap(), ip("10.0.0.6"));
        // The top is reached: wrap round to the lowest free address, .2
        // (freed by a), skipping .4 and .5 (held).
        assert_eq!(p.allocate("f").unwrap(), ip("10.0.0.2"));
        assert_eq!(p.allocate("g").unwrap(), ip("10.0.0.3"));
        assert!(p.allocate("h").is_err());
    }

    #[test]
    fn a_saved_pool_is_checked() {
        let cidr: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        let ok: BTreeMap<String, Ipv4Addr> = [("a".to_string(), ip("10.244.0.9"))].into();
        let p = Pool::from_parts(cidr, ok, Some(ip("10.244.0.9"))).unwrap();
        assert_eq!(p.last(), Some(ip("10.244.0.9")));
        let mut p2 = p.clone();
        // The search goes on after the saved `last`.
        assert_eq!(p2.allocate("b").unwrap(), ip("10.244.0.10"));

        let gateway: BTreeMap<String, Ipv4Addr> = [("a".to_string(), ip("10.244.0.1"))].into();
        let err = Pool::from_parts(cidr, gateway, None).unwrap_err();
        assert!(err.contains("10.244.0.1"), "{err}");
        let twice: BTreeMap<String, Ipv4Addr> = [
            ("a".to_string(), ip("10.244.0.5")),
            ("b".to_string(), ip("10.244.0.5")),
        ]
        .into();
        assert!(Pool::from_parts(cidr, twice, None).is_err());
    }
}
