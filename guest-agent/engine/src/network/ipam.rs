//! IPv4 address management: subnets, gateways and per-network leases.
//!
//! Each bridge network owns one IPv4 subnet. The gateway (the bridge's own
//! address) is the subnet's first host; containers lease the following
//! addresses in order, skipping ones in use. Leases live in memory only:
//! containers lease again when they start, as in Docker.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::Error;

/// An IPv4 subnet such as `172.17.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// The netmask as an integer.
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The first host address, used as the gateway.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The broadcast address (never leased).
    fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidConfig(format!("invalid subnet {s:?}: want a.b.c.d/n"));
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&prefix) {
            return Err(Error::InvalidConfig(format!(
                "invalid subnet {s:?}: the prefix length must be between 8 and 30"
            )));
        }
        let subnet = Subnet {
            network: addr,
            prefix,
        };
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & subnet.mask()),
            prefix,
        })
    }
}

/// The addresses leased in one subnet.
#[derive(Debug)]
pub struct Pool {
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    leased: BTreeSet<Ipv4Addr>,
}

impl Pool {
    pub fn new(subnet: Subnet, gateway: Ipv4Addr) -> Self {
        Self {
            subnet,
            gateway,
            leased: BTreeSet::new(),
        }
    }

    /// Leases `wanted` if given (it must be free and in the subnet), else
    /// the lowest free host address.
    pub fn lease(&mut self, network: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
        if let Some(ip) = wanted {
            if !self.subnet.contains(ip)
                || ip == self.gateway
                || ip == self.subnet.network
                || ip == self.subnet.broadcast()
            {
                return Err(Error::InvalidConfig(format!(
                    "address {ip} is not usable in network {network} ({})",
                    self.subnet
                )));
            }
            if !self.leased.insert(ip) {
                return Err(Error::AddressInUse {
                    network: network.to_owned(),
                    ip,
                });
            }
            return Ok(ip);
        }
        let first = u32::from(self.subnet.network) + 1;
        let last = u32::from(self.subnet.broadcast());
        let ip = (first..last)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.gateway && !self.leased.contains(ip))
            .ok_or_else(|| Error::PoolExhausted(network.to_owned()))?;
        self.leased.insert(ip);
        Ok(ip)
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.leased.remove(&ip);
    }
}

/// Picks the subnet for a new network: the first of 172.18.0.0/16 ..
/// 172.31.0.0/16, then 192.168.0.0/20 .. 192.168.240.0/20 (Docker's default
/// pools) that overlaps none of `used`.
pub fn next_free_subnet(used: &[Subnet]) -> Option<Subnet> {
    let candidates = (18..=31)
        .map(|b| Subnet {
            network: Ipv4Addr::new(172, b, 0, 0),
            prefix: 16,
        })
        .chain((0..16).map(|c| Subnet {
            network: Ipv4Addr::new(192, 168, c * 16, 0),
            prefix: 20,
        }));
    candidates
        .into_iter()
        .find(|c| !used.iter().any(|u| u.overlaps(*c)))
}

/// Docker's MAC for an address: `02:42` then the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parse_masks_host_bits() {
        let subnet: Subnet = "172.17.3.4/16".parse().unwrap();
        assert_eq!(subnet.to_string(), "172.17.0.0/16");
        assert_eq!(subnet.first_host(), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn subnet_parse_rejects_missing_prefix() {
        assert!("10.0.0.0".parse::<Subnet>().is_err());
    }

    #[test]
    fn pool_leases_in_order_and_skips_gateway() {
        let subnet: Subnet = "10.1.0.0/24".parse().unwrap();
        let mut pool = Pool::new(subnet, subnet.first_host());
        assert_eq!(pool.lease("n", None).unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(pool.lease("n", None).unwrap(), Ipv4Addr::new(10, 1, 0, 3));
        pool.release(Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(pool.lease("n", None).unwrap(), Ipv4Addr::new(10, 1, 0, 2));
    }

    #[test]
    fn pool_refuses_a_leased_static_address() {
        let subnet: Subnet = "10.1.0.0/24".parse().unwrap();
        let mut pool = Pool::new(subnet, subnet.first_host());
        let ip = Ipv4Addr::new(10, 1, 0, 9);
        pool.lease("n", Some(ip)).unwrap();
        assert!(matches!(
            pool.lease("n", Some(ip)),
            Err(Error::AddressInUse { .. })
        ));
    }

    #[test]
    fn pool_exhausts_a_small_subnet() {
        // A /30 has two hosts: the gateway and one container.
        let subnet: Subnet = "10.1.0.0/30".parse().unwrap();
        let mut pool = Pool::new(subnet, subnet.first_host());
        pool.lease("n", None).unwrap();
        assert!(matches!(
            pool.lease("n", None),
            Err(Error::PoolExhausted(_))
        ));
    }

    #[test]
    fn next_free_subnet_skips_used_ranges() {
        let used = [
            "172.17.0.0/16".parse().unwrap(),
            "172.18.5.0/24".parse().unwrap(),
        ];
        assert_eq!(
            next_free_subnet(&used).unwrap().to_string(),
            "172.19.0.0/16"
        );
    }

    #[test]
    fn mac_follows_docker_scheme() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 17, 0, 2)), "02:42:ac:11:00:02");
    }
}
