//! An address pool over one subnet: hands out the lowest free address,
//! takes back released ones, and is rebuilt from the addresses the objects
//! hold. It knows nothing of services or tasks, so a network can own one.
//!
//! The subnet's first address is the network's own (its gateway; here every
//! node's DNS server) and its last is the broadcast address: neither is
//! ever handed out.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddrPool {
    base: Ipv4Addr,
    prefix: u8,
    /// Addresses handed out or reserved, inside the subnet.
    used: BTreeSet<Ipv4Addr>,
    /// Where addresses are handed out from, when narrower than the subnet
    /// (a network's `--ip-range`).
    within: Option<(u32, u32)>,
}

impl AddrPool {
    /// An empty pool over `base/prefix` (host bits of `base` are ignored).
    pub(crate) fn new(base: Ipv4Addr, prefix: u8) -> Self {
        assert!(prefix <= 32, "prefix /{prefix} is not an IPv4 prefix");
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        AddrPool {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
            used: BTreeSet::new(),
            within: None,
        }
    }

    /// The pool of a swarm network: its subnet, its gateway never handed
    /// out, and addresses only from `range` when it has one.
    pub(crate) fn for_network(ipam: &crate::networks::Ipam) -> Self {
        let mut pool = AddrPool::new(ipam.subnet.addr, ipam.subnet.prefix);
        if let Some(range) = ipam.range {
            let first = u32::from(range.addr);
            let last = first.saturating_add((range.size() - 1) as u32);
            pool.within = Some((first, last));
        }
        pool.used.insert(ipam.gateway);
        pool
    }

    #[cfg(test)]
    /// A pool with `in_use` already taken: what a load rebuilds from the
    /// objects' addresses.
    pub(crate) fn rebuild(
        base: Ipv4Addr,
        prefix: u8,
        in_use: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Self {
        let mut pool = AddrPool::new(base, prefix);
        for ip in in_use {
            pool.reserve(ip);
        }
        pool
    }

    /// The subnet, as `198.18.0.0/16`.
    pub(crate) fn subnet(&self) -> String {
        format!("{}/{}", self.base, self.prefix)
    }

    #[cfg(test)]
    /// `ip` with the subnet's prefix, as Docker shows an address on a
    /// network (`198.18.0.2/16`).
    pub(crate) fn cidr(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.prefix)
    }

    /// The network's own address (the subnet's first), never handed out.
    #[cfg(test)]
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(1))
    }

    /// The first and last addresses that can be handed out (none in a
    /// subnet too small for one besides the gateway and broadcast).
    fn range(&self) -> Option<(u32, u32)> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        let mut first = u64::from(u32::from(self.base)) + 2;
        let mut last = u64::from(u32::from(self.base)) + size - 2;
        if let Some((lo, hi)) = self.within {
            first = first.max(u64::from(lo));
            last = last.min(u64::from(hi));
        }
        (first <= last).then_some((first as u32, last as u32))
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.range()
            .is_some_and(|(first, last)| (first..=last).contains(&u32::from(ip)))
    }

    /// Takes the lowest free address.
    pub(crate) fn take(&mut self) -> Result<Ipv4Addr, StoreError> {
        let exhausted = || StoreError::NoFreeAddress {
            network: self.subnet(),
        };
        let (first, last) = self.range().ok_or_else(exhausted)?;
        let mut candidate = first;
        for used in self.used.range(Ipv4Addr::from(first)..) {
            if u32::from(*used) != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate > last {
            return Err(exhausted());
        }
        let ip = Ipv4Addr::from(candidate);
        self.used.insert(ip);
        Ok(ip)
    }

    /// Marks `ip` taken; false when it already was or is not the pool's to
    /// hand out.
    pub(crate) fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && self.used.insert(ip)
    }

    /// Gives `ip` back; false when it was not taken.
    pub(crate) fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.used.remove(&ip)
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.used.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_lowest_free_address_is_taken_after_the_gateway() {
        let mut pool = AddrPool::new(ip("10.0.0.0"), 24);
        assert_eq!(pool.gateway(), ip("10.0.0.1"));
        assert_eq!(pool.take(), Ok(ip("10.0.0.2")));
        assert_eq!(pool.take(), Ok(ip("10.0.0.3")));
        assert_eq!(pool.take(), Ok(ip("10.0.0.4")));
    }

    #[test]
    fn a_released_address_is_reused_first() {
        let mut pool = AddrPool::new(ip("10.0.0.0"), 24);
        for _ in 0..3 {
            pool.take().unwrap();
        }
        assert!(pool.release(ip("10.0.0.3")));
        assert!(!pool.release(ip("10.0.0.3")), "released twice");
        assert_eq!(pool.take(), Ok(ip("10.0.0.3")));
        assert_eq!(pool.take(), Ok(ip("10.0.0.5")));
    }

    #[test]
    fn a_full_pool_names_its_subnet() {
        // A /29 has 8 addresses: network, gateway, 5 to hand out, broadcast.
        let mut pool = AddrPool::new(ip("10.0.0.0"), 29);
        let taken: Vec<_> = (0..5).map(|_| pool.take().unwrap()).collect();
        assert_eq!(taken.first(), Some(&ip("10.0.0.2")));
        assert_eq!(taken.last(), Some(&ip("10.0.0.6")));
        let full = StoreError::NoFreeAddress {
            network: "10.0.0.0/29".into(),
        };
        assert_eq!(pool.take(), Err(full.clone()));
        // Nothing to hand out at all in a /31.
        assert_eq!(
            AddrPool::new(ip("10.0.0.0"), 31).take(),
            Err(StoreError::NoFreeAddress {
                network: "10.0.0.0/31".into()
            })
        );
        pool.release(ip("10.0.0.4"));
        assert_eq!(pool.take(), Ok(ip("10.0.0.4")));
        assert_eq!(pool.take(), Err(full));
    }

    #[test]
    fn reserved_addresses_are_skipped_and_foreign_ones_refused() {
        let mut pool = AddrPool::new(ip("10.0.0.0"), 24);
        assert!(pool.reserve(ip("10.0.0.2")));
        assert!(!pool.reserve(ip("10.0.0.2")), "already taken");
        assert!(!pool.reserve(ip("10.0.0.1")), "the gateway");
        assert!(!pool.reserve(ip("10.0.0.255")), "broadcast");
        assert!(!pool.reserve(ip("10.0.1.7")), "another subnet");
        assert_eq!(pool.take(), Ok(ip("10.0.0.3")));
    }

    #[test]
    fn a_rebuilt_pool_fills_the_gaps_first() {
        let in_use = [ip("10.0.0.2"), ip("10.0.0.4"), ip("10.0.0.5")];
        let mut pool = AddrPool::rebuild(ip("10.0.0.0"), 24, in_use);
        assert_eq!(pool.in_use().collect::<Vec<_>>(), in_use);
        assert_eq!(pool.take(), Ok(ip("10.0.0.3")));
        assert_eq!(pool.take(), Ok(ip("10.0.0.6")));
    }

    #[test]
    fn a_network_pool_keeps_its_gateway_and_range() {
        use crate::networks::{Ipam, Subnet};
        let ipam = Ipam {
            subnet: Subnet::parse("10.0.9.0/24").unwrap(),
            gateway: ip("10.0.9.2"),
            range: Some(Subnet::parse("10.0.9.0/30").unwrap()),
        };
        let mut pool = AddrPool::for_network(&ipam);
        // .0 is the subnet's, .1 stays reserved as any network's first
        // host, .2 is the gateway: .3 is the one address of the range left.
        assert_eq!(pool.take(), Ok(ip("10.0.9.3")));
        assert!(pool.take().is_err());
        assert!(!pool.reserve(ip("10.0.9.9")), "outside the range");
    }

    #[test]
    fn host_bits_of_the_base_are_ignored() {
        let mut pool = AddrPool::new(ip("10.0.0.77"), 24);
        assert_eq!(pool.subnet(), "10.0.0.0/24");
        assert_eq!(pool.cidr(ip("10.0.0.9")), "10.0.0.9/24");
        assert_eq!(pool.take(), Ok(ip("10.0.0.2")));
    }
}
