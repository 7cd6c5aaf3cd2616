//! Home networks and allowlisted destinations: which side of a flow is "outbound".

use crate::decode::Addr;
use crate::flow::Side;
use ipnet::IpNet;

/// A set of networks. Matched once per new flow (never per packet), so a linear scan over
/// a short list is cheaper than building a trie.
#[derive(Clone, Debug, Default)]
pub struct NetSet {
    nets: Vec<IpNet>,
}

impl NetSet {
    /// From a list of CIDRs.
    pub fn new(nets: &[IpNet]) -> NetSet {
        NetSet {
            nets: nets.to_vec(),
        }
    }

    /// Whether an address is in the set.
    pub fn contains(&self, addr: Addr, ipv6: bool) -> bool {
        let ip = addr.to_ip(ipv6);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Classifies flows by direction relative to the home networks.
#[derive(Clone, Debug, Default)]
pub struct Direction {
    home: NetSet,
    allow_dst: NetSet,
    allow_src: NetSet,
}

impl Direction {
    /// From `home_nets`, `allow.dst_cidrs` and `allow.src_cidrs`.
    pub fn new(home: &[IpNet], allow_dst: &[IpNet], allow_src: &[IpNet]) -> Direction {
        Direction {
            home: NetSet::new(home),
            allow_dst: NetSet::new(allow_dst),
            allow_src: NetSet::new(allow_src),
        }
    }

    /// The side of a flow that is a home host talking to a non-allowlisted external host,
    /// if there is one. Home↔home and external↔external flows are not outbound.
    pub fn outbound(&self, orig: Addr, resp: Addr, ipv6: bool) -> Option<Side> {
        let orig_home = self.home.contains(orig, ipv6);
        let resp_home = self.home.contains(resp, ipv6);
        let ok = |home: Addr, ext: Addr| {
            !self.allow_dst.contains(ext, ipv6) && !self.allow_src.contains(home, ipv6)
        };
        match (orig_home, resp_home) {
            (true, false) if ok(orig, resp) => Some(Side::Orig),
            (false, true) if ok(resp, orig) => Some(Side::Resp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn outbound_sides() {
        let d = Direction::new(
            &nets(&["10.0.0.0/8", "fc00::/7"]),
            &nets(&["203.0.113.0/24"]),
            &nets(&["10.9.9.9/32"]),
        );
        // An allowlisted source (the backup server) is never outbound.
        assert_eq!(
            d.outbound(Addr::v4([10, 9, 9, 9]), Addr::v4([8, 8, 8, 8]), false),
            None
        );
        let home = Addr::v4([10, 1, 2, 3]);
        let ext = Addr::v4([198, 51, 100, 1]);
        let allowed = Addr::v4([203, 0, 113, 9]);
        assert_eq!(d.outbound(home, ext, false), Some(Side::Orig));
        assert_eq!(d.outbound(ext, home, false), Some(Side::Resp));
        assert_eq!(d.outbound(home, home, false), None);
        assert_eq!(d.outbound(ext, ext, false), None);
        assert_eq!(d.outbound(home, allowed, false), None);
        let h6 = Addr::v6("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let e6 = Addr::v6(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(d.outbound(h6, e6, true), Some(Side::Orig));
        // An IPv6 address whose last 4 bytes look like a home IPv4 is not home.
        let mapped_like = Addr::v6(
            "2001:db8::a01:203"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(d.outbound(mapped_like, e6, true), None);
    }
}
