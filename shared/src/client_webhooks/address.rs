//! Where a client webhook may go. A webhook URL is the client's choice, and a worker calls it:
//! without rules a client could make gengate's workers call into gengate's own network (a
//! database's HTTP port, a cloud metadata service). So a URL must be `https` and name a public
//! host when it is given, and when it is called its host is resolved and every address checked;
//! the connection goes only to an address that passed (the check is in the HTTP client's
//! resolver, so a name that resolves differently the second time cannot slip past it). Redirects
//! are never followed. `client_webhooks.allow_http` and `allow_private_addresses` lift the rules
//! for the local stack and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::ClientWebhookSettings;
use crate::validation::Text;

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Names that never resolve to a public address: loopback, mDNS, and the suffixes networks and
/// cloud metadata services use inside (`metadata.google.internal`).
pub const PRIVATE_NAME_SUFFIXES: &[&str] =
    &[".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet"];

/// Whether a host name is one that only resolves inside a network (a single label, `localhost`,
/// a private suffix).
pub fn is_private_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !name.contains('.')
        || PRIVATE_NAME_SUFFIXES.iter().any(|suffix| name == suffix[1..] || name.ends_with(suffix))
}

/// Checks a webhook URL as a client gives it: a URL in normal form without credentials, `https`
/// (or `http` when allowed), naming a public host (unless private addresses are allowed).
pub fn check_url(text: &str, settings: &ClientWebhookSettings) -> Result<url::Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    if let Some(why) = Text::Token.check(text) {
        return Err(why.into());
    }
    let url = url::Url::parse(text).map_err(|_| "must be a valid URL".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_http => {}
        _ if settings.allow_http => return Err("must be an http or https URL".into()),
        _ => return Err("must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let Some(host) = url.host() else { return Err("must name a host".into()) };
    if settings.allow_private_addresses {
        return Ok(url);
    }
    let private = match host {
        url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
        url::Host::Domain(name) => is_private_name(name),
    };
    if private {
        return Err(
            "must name a public host (not a private, loopback or link-local address)".into()
        );
    }
    Ok(url)
}

/// Whether an address is one anybody on the internet could reach: not loopback, private (RFC
/// 1918, unique-local), link-local (where cloud metadata services answer), shared (CGNAT),
/// benchmarking, documentation, multicast, broadcast, unspecified or reserved; an IPv6 address
/// that embeds an IPv4 one (mapped, NAT64) is judged by the embedded one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only 100::/64
        || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

/// Why an attempt was not made: the host resolved to an address gengate may not call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused: {host} resolves to {address}, a private, loopback or link-local address")]
pub struct Refused {
    /// The host.
    pub host: String,
    /// The address it resolved to.
    pub address: IpAddr,
}

/// Keeps only the addresses gengate may call (all of them when private addresses are allowed);
/// refuses the host when one of its addresses is private (a name that resolves to both could
/// otherwise be used to reach the private one on a retry).
pub fn screen(
    host: &str,
    addresses: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    if allow_private {
        return Ok(addresses);
    }
    if let Some(bad) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(Refused { host: host.to_owned(), address: bad.ip() });
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in
            ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_host_with_any_private_address_is_refused() {
        let public: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let private: SocketAddr = "10.0.0.7:443".parse().unwrap();
        assert_eq!(screen("a.example", vec![public], false).unwrap(), [public]);
        let refused = screen("a.example", vec![public, private], false).unwrap_err();
        assert_eq!(refused.address, private.ip());
        assert!(refused.to_string().contains("10.0.0.7"));
        assert_eq!(screen("a.example", vec![private], true).unwrap(), [private]);
    }

    #[test]
    fn private_names_are_recognised() {
        for name in
            ["localhost", "LOCALHOST.", "db", "metadata.google.internal", "x.local", "a.lan"]
        {
            assert!(is_private_name(name), "{name}");
        }
        for name in ["hooks.example.com", "example.org."] {
            assert!(!is_private_name(name), "{name}");
        }
    }
}
