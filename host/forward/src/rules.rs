//! Port-forwarding rules (a template's `portForwards`, Lima's semantics):
//! which guest ports are forwarded, to which host address and port.
//!
//! Rules are tried in order and the first match decides. A port no rule
//! matches is forwarded to `127.0.0.1` at the same port number.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use berth_proto::control::Proto;

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub guest_ports: RangeInclusive<u16>,
    /// The guest address the rule matches. `None` (Lima's default,
    /// 127.0.0.1) matches loopback and wildcard bindings; an address matches
    /// itself and wildcard bindings.
    pub guest_ip: Option<IpAddr>,
    /// Where the host listens (default 127.0.0.1).
    pub host_ip: IpAddr,
    /// The host port of the range's first guest port (default: the same).
    pub host_port_start: Option<u16>,
    /// `None` matches TCP and UDP.
    pub proto: Option<Proto>,
    pub ignore: bool,
}

/// What to do with a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Ignore,
    Forward { host_ip: IpAddr, host_port: u16 },
}

/// The first matching rule's decision for `guest_port` bound at `guest_ip`.
pub fn decide(rules: &[PortRule], proto: Proto, guest_ip: IpAddr, guest_port: u16) -> Decision {
    for rule in rules {
        if !rule.guest_ports.contains(&guest_port) || rule.proto.is_some_and(|p| p != proto) {
            continue;
        }
        let ip_matches = match rule.guest_ip {
            None => guest_ip.is_loopback() || guest_ip.is_unspecified(),
            Some(ip) if ip.is_unspecified() => true,
            Some(ip) => ip == guest_ip || guest_ip.is_unspecified(),
        };
        if !ip_matches {
            continue;
        }
        if rule.ignore {
            return Decision::Ignore;
        }
        let offset = guest_port - rule.guest_ports.start();
        let host_port = rule
            .host_port_start
            .map_or(guest_port, |start| start.saturating_add(offset));
        return Decision::Forward {
            host_ip: rule.host_ip,
            host_port,
        };
    }
    Decision::Forward {
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: guest_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ports: RangeInclusive<u16>) -> PortRule {
        PortRule {
            guest_ports: ports,
            guest_ip: None,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port_start: None,
            proto: None,
            ignore: false,
        }
    }

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    #[test]
    fn without_rules_a_port_goes_to_host_loopback_at_the_same_number() {
        assert_eq!(
            decide(&[], Proto::Tcp, ANY, 8080),
            Decision::Forward {
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: 8080
            }
        );
    }

    #[test]
    fn a_range_maps_onto_a_host_range_and_the_first_match_wins() {
        let rules = [
            PortRule {
                ignore: true,
                ..rule(3000..=3000)
            },
            PortRule {
                host_port_start: Some(13000),
                host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                ..rule(3000..=3009)
            },
        ];
        assert_eq!(decide(&rules, Proto::Tcp, ANY, 3000), Decision::Ignore);
        assert_eq!(
            decide(&rules, Proto::Tcp, ANY, 3005),
            Decision::Forward {
                host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host_port: 13005
            }
        );
    }

    #[test]
    fn proto_and_guest_address_narrow_a_rule() {
        let rules = [PortRule {
            proto: Some(Proto::Udp),
            ignore: true,
            ..rule(53..=53)
        }];
        assert_eq!(decide(&rules, Proto::Udp, ANY, 53), Decision::Ignore);
        assert!(matches!(
            decide(&rules, Proto::Tcp, ANY, 53),
            Decision::Forward { .. }
        ));

        let only_loopback = [PortRule {
            ignore: true,
            ..rule(1..=65535)
        }];
        let lan: IpAddr = "10.0.2.15".parse().unwrap();
        assert!(matches!(
            decide(&only_loopback, Proto::Tcp, lan, 80),
            Decision::Forward { .. }
        ));
        assert_eq!(
            decide(&only_loopback, Proto::Tcp, ANY, 80),
            Decision::Ignore
        );
    }
}
