//! Which connections a workload may make (egress: `connect`) and accept (ingress:
//! `bind`/`listen`), as allowlists of peers, ports, protocols and processes.
//!
//! A peer is an address range ([`Cidr`], host bits must be zero so that what is
//! written is what is matched) or a DNS name, which the node resolves when it loads
//! the policy (and again when it reloads it); a name that does not resolve is reported
//! there. Names are not wildcards: `*.example.com` cannot be resolved to addresses.
use std::{fmt, net::IpAddr, path::PathBuf};

use super::{FieldError, SourceLocation};
use crate::cedar::{ir::Cidr, parse_cedar_ip};

/// The network part of a profile. Both lists empty: no network rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub ingress: Vec<IngressRule>,
    pub egress: Vec<EgressRule>,
}

/// Connections the workload may open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressRule {
    /// At least one peer.
    pub to: Vec<Peer>,
    /// Empty: any port.
    pub ports: Vec<PortRange>,
    /// Empty: TCP and UDP.
    pub protocols: Vec<Protocol>,
    /// Executables that may connect; empty: any process of the workload.
    pub processes: Vec<PathBuf>,
    pub at: SourceLocation,
}

/// Ports the workload may listen on, and who may connect to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRule {
    /// Source ranges; empty: anyone.
    pub from: Vec<Cidr>,
    /// Empty: any port.
    pub ports: Vec<PortRange>,
    /// Empty: TCP and UDP.
    pub protocols: Vec<Protocol>,
    /// Executables that may listen; empty: any process of the workload.
    pub processes: Vec<PathBuf>,
    pub at: SourceLocation,
}

/// Where a connection may go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Cidr(Cidr),
    Dns(DnsName),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(c) => c.fmt(f),
            Peer::Dns(d) => d.fmt(f),
        }
    }
}

impl Peer {
    /// An address or range (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`) or a host name.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if looks_like_address(s) {
            parse_cidr(s).map(Peer::Cidr)
        } else {
            DnsName::new(s)
                .map(Peer::Dns)
                .map_err(|e| FieldError::new(format!("`{s}` is neither a CIDR nor {e}")))
        }
    }
}

fn looks_like_address(s: &str) -> bool {
    s.contains('/') || s.contains(':') || s.parse::<IpAddr>().is_ok()
}

/// `addr[/prefix]`, parsed as Cedar's `ip("…")` is, with host bits refused.
pub fn parse_cidr(s: &str) -> Result<Cidr, FieldError> {
    let cidr = parse_cedar_ip(s).map_err(|why| FieldError::new(format!("CIDR `{s}`: {why}")))?;
    let written: Option<IpAddr> = s.split('/').next().and_then(|a| a.parse().ok());
    if written != Some(cidr.addr) {
        return Err(FieldError::new(format!(
            "CIDR `{s}` has host bits set; the range it names is `{cidr}`"
        )));
    }
    Ok(cidr)
}

/// A host name, lowercase, without a trailing dot: labels of 1-63 characters of
/// `a-z 0-9 -` not starting or ending with `-`, at most 253 characters, the last label
/// not all digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    pub fn new(s: &str) -> Result<Self, FieldError> {
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if name.contains('*') {
            return Err(FieldError::new(
                "a host name (wildcards cannot be resolved to addresses)",
            ));
        }
        let bad = || {
            FieldError::new(
                "a host name (labels of 1-63 characters of a-z, 0-9, `-`, not starting or ending with `-`; at most 253 characters)",
            )
        };
        if name.is_empty() || name.len() > 253 {
            return Err(bad());
        }
        for label in name.split('.') {
            let ok = (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(bad());
            }
        }
        if name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        Ok(DnsName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive range of ports, `first <= last`, never port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// `443` or `8000-8999`.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first = parse_port(a.trim(), s)?;
        let last = parse_port(b.trim(), s)?;
        if first > last {
            return Err(FieldError::new(format!(
                "port range `{s}` is inverted: {first} is above {last}"
            )));
        }
        Ok(PortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, FieldError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(format!(
            "port `{whole}` must be a number from 1 to 65535 or a range `first-last`"
        )));
    }
    match p.parse::<u32>() {
        Ok(0) => Err(FieldError::new(format!(
            "port 0 in `{whole}` is not a port a connection can use"
        ))),
        Ok(n) => u16::try_from(n).map_err(|_| {
            FieldError::new(format!(
                "port {n} in `{whole}` is out of range (1 to 65535)"
            ))
        }),
        Err(_) => Err(FieldError::new(format!("port `{whole}` is not a number"))),
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A transport protocol.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_are_parsed_and_bad_ones_say_why() {
        assert_eq!(
            PortRange::parse("443").unwrap(),
            PortRange {
                first: 443,
                last: 443
            }
        );
        assert_eq!(
            PortRange::parse("8000-8999").unwrap(),
            PortRange {
                first: 8000,
                last: 8999
            }
        );
        for (bad, why) in [
            ("0", "port 0"),
            ("65536", "out of range"),
            ("9000-8000", "inverted"),
            ("-5", "must be a number"),
            ("http", "must be a number"),
            ("1-", "must be a number"),
        ] {
            let err = PortRange::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn peers_are_cidrs_or_host_names() {
        assert_eq!(
            Peer::parse("10.20.0.0/16").unwrap().to_string(),
            "10.20.0.0/16"
        );
        assert_eq!(
            Peer::parse("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            Peer::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            Peer::parse("S3.eu-west-1.amazonaws.com.").unwrap(),
            Peer::Dns(DnsName::new("s3.eu-west-1.amazonaws.com").unwrap())
        );
        for (bad, why) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "longer than 32"),
            ("10.0.0.300", "neither a CIDR"),
            ("*.example.com", "wildcards"),
            ("-bad.example.com", "neither a CIDR"),
            ("a..b", "neither a CIDR"),
            ("under_score.example", "neither a CIDR"),
        ] {
            let err = Peer::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
