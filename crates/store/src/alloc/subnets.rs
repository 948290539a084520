//! Subnets for swarm networks from the swarm's default address pools
//! (`swarm init --default-addr-pool 10.20.0.0/16 --default-addr-pool-mask-length 26`):
//! the first subnet of the asked size, pool after pool, that overlaps no
//! network's. Pure: what is taken is passed in.

use crate::error::StoreError;
use crate::networks::Subnet;

/// Docker's defaults: 10.0.0.0/8 cut into /24s.
pub(crate) const DEFAULT_POOL: &str = "10.0.0.0/8";
pub(crate) const DEFAULT_SIZE: u8 = 24;

/// The first free subnet of `/size` in `pools`, in order.
pub(crate) fn first_free(
    pools: &[Subnet],
    size: u8,
    taken: &[Subnet],
) -> Result<Subnet, StoreError> {
    for pool in pools {
        if size < pool.prefix || size > 32 {
            continue;
        }
        let step = 1u64 << (32 - u32::from(size));
        let start = u64::from(u32::from(pool.addr));
        let end = start + pool.size();
        let mut at = start;
        while at < end {
            let candidate = Subnet {
                addr: std::net::Ipv4Addr::from(at as u32),
                prefix: size,
            };
            match taken.iter().find(|t| t.overlaps(&candidate)) {
                None => return Ok(candidate),
                // Skip past the whole subnet in the way, aligned to `step`.
                Some(t) => {
                    let past = u64::from(u32::from(t.addr)) + t.size();
                    at = past.max(at + step).div_ceil(step) * step;
                }
            }
        }
    }
    let pools: Vec<String> = pools.iter().map(Subnet::to_string).collect();
    Err(StoreError::Invalid(format!(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network: no free /{size} subnet left in the default address pools ({})",
        pools.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Subnet {
        Subnet::parse(v).unwrap()
    }

    #[test]
    fn subnets_come_in_order_around_taken_ones() {
        let pools = [s("10.0.0.0/8")];
        assert_eq!(first_free(&pools, 24, &[]).unwrap(), s("10.0.0.0/24"));
        let taken = [s("10.0.0.0/24"), s("10.0.1.0/24"), s("10.0.3.0/24")];
        assert_eq!(first_free(&pools, 24, &taken).unwrap(), s("10.0.2.0/24"));
        // A bigger subnet in the way is skipped whole.
        let taken = [s("10.0.0.0/16")];
        assert_eq!(first_free(&pools, 24, &taken).unwrap(), s("10.1.0.0/24"));
        // A smaller one blocks the subnet that holds it.
        let taken = [s("10.0.0.128/25")];
        assert_eq!(first_free(&pools, 24, &taken).unwrap(), s("10.0.1.0/24"));
    }

    #[test]
    fn pools_are_tried_in_order_and_exhaustion_names_them() {
        let pools = [s("10.20.0.0/25"), s("10.30.0.0/16")];
        assert_eq!(first_free(&pools, 26, &[]).unwrap(), s("10.20.0.0/26"));
        let taken = [s("10.20.0.0/26"), s("10.20.0.64/26")];
        assert_eq!(first_free(&pools, 26, &taken).unwrap(), s("10.30.0.0/26"));
        let e = first_free(&[s("10.20.0.0/25")], 26, &taken).unwrap_err();
        assert!(e.to_string().contains("10.20.0.0/25"), "{e}");
        // A pool smaller than the subnet size holds none.
        assert!(first_free(&[s("10.20.0.0/28")], 24, &[]).is_err());
    }
}
