//! Which addresses a download may reach. Unless `remote.allow_private_addresses` is set, a
//! host that resolves to a loopback, private, link-local, shared, unspecified, multicast or
//! reserved address (IPv4, IPv6, and IPv4 inside IPv6) is refused, so a dataset URI cannot
//! make the server read itself or its network. Names are resolved once, every address is
//! checked, and the client connects to exactly the checked addresses (its resolver is this
//! one), so a name that resolves differently the second time cannot slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::settings::RemoteSettings;

/// Whether a download may connect to `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 included
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (first & 0xffc0) == 0xfec0) // site-local (deprecated)
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// Why a host cannot be reached; every case reads the same to the client.
#[derive(Debug, thiserror::Error)]
#[error("the host is unreachable or not allowed")]
pub struct Refused;

/// Whether `host` (a name or an address literal) may be reached: a literal is checked here;
/// a name is checked by the client's resolver when it connects.
pub fn check_literal(host: &str, allow_private: bool) -> Result<(), Refused> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if !allow_private && !is_public(ip) => Err(Refused),
        _ => Ok(()),
    }
}

/// The resolver of download clients: the system's, then every address checked.
struct CheckedResolver {
    allow_private: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() || !(allow_private || addrs.iter().all(|a| is_public(a.ip()))) {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client for downloads: checked resolution, redirects followed only to allowed
/// hosts (at most 5), no proxy from the environment (it would resolve names itself), and
/// connect and read timeouts.
pub fn client(settings: &RemoteSettings) -> reqwest::Result<reqwest::Client> {
    let allow_private = settings.allow_private_addresses;
    let timeout = Duration::from_secs(settings.timeout_secs);
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let host = attempt.url().host_str().unwrap_or("").to_string();
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if check_literal(&host, allow_private).is_err() {
            attempt.error(Refused)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver { allow_private }))
        .redirect(redirects)
        .no_proxy()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .build()
}

/// object_store's S3 client built as [`client`] builds ours.
#[derive(Debug)]
pub struct CheckedConnector(pub RemoteSettings);

impl object_store::client::HttpConnector for CheckedConnector {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let c = client(&self.0).map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
        Ok(object_store::client::HttpClient::new(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_mapped_addresses_are_not_public() {
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(!is_public(denied.parse().unwrap()), "{denied}");
        }
        for allowed in ["93.184.215.14", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
        assert!(check_literal("[::1]", false).is_err());
        assert!(check_literal("[::1]", true).is_ok());
        assert!(check_literal("example.com", false).is_ok());
    }
}
