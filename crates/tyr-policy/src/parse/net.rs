//! `net_connect` resources: CIDRs and port ranges.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::model::PortRange;

/// A message and an optional hint.
pub(super) type Problem = (String, Option<String>);

/// Parses an IP (a /32 or /128 network) or a CIDR with no host bits set. IPv4-mapped IPv6
/// networks (`::ffff:0:0/96` and below) become the IPv4 network.
pub(super) fn cidr(s: &str) -> Result<IpNet, Problem> {
    let net = if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| {
            (
                format!("invalid CIDR `{s}`"),
                Some("expected an address and a prefix length, e.g. `10.0.0.0/8`".into()),
            )
        })?;
        if net.trunc() != net {
            return Err((
                format!("CIDR `{s}` has host bits set"),
                Some(format!("did you mean `{}`?", net.trunc())),
            ));
        }
        net
    } else {
        let ip: IpAddr = s.parse().map_err(|_| {
            (
                format!("invalid IP address or CIDR `{s}`"),
                Some("e.g. `192.0.2.1`, `10.0.0.0/8` or `2001:db8::/32`".into()),
            )
        })?;
        IpNet::from(ip)
    };
    Ok(unmap(net))
}

/// Stores an IPv4-mapped IPv6 network as the IPv4 network it stands for.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

const PORT_HINT: &str = "use an integer 1-65535 or a range string like \"8000-8100\"";

/// A port given as a YAML integer.
pub(super) fn port_number(n: i128) -> Result<PortRange, Problem> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(PortRange { start: p, end: p }),
        _ => Err((
            format!("port {n} is out of range 1-65535"),
            Some(PORT_HINT.into()),
        )),
    }
}

/// A port range given as an `"A-B"` string.
pub(super) fn port_range(s: &str) -> Result<PortRange, Problem> {
    let bad = || (format!("invalid port range `{s}`"), Some(PORT_HINT.into()));
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let parse = |x: &str| x.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (start, end) = parse(a).zip(parse(b)).ok_or_else(bad)?;
    if start > end {
        return Err((
            format!("port range `{s}` is reversed"),
            Some(format!("did you mean \"{end}-{start}\"?")),
        ));
    }
    Ok(PortRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(cidr("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(cidr("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/80").unwrap().to_string(), "::/80");
        assert!(
            cidr("10.1.2.3/8")
                .unwrap_err()
                .1
                .unwrap()
                .contains("10.0.0.0/8")
        );
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("example.com").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            port_range("8000-8100").unwrap(),
            PortRange {
                start: 8000,
                end: 8100
            }
        );
        assert!(port_range("9-8").is_err());
        assert!(port_range("0-8").is_err());
        assert!(port_range("80").is_err());
        assert!(port_number(0).is_err());
        assert!(port_number(65536).is_err());
        assert_eq!(
            port_number(443).unwrap(),
            PortRange {
                start: 443,
                end: 443
            }
        );
    }
}
