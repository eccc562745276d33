//! Requests VoidVM makes to addresses users name (webhook receivers, image downloads): what counts
//! as a private address, and a resolver that refuses host names resolving to one. Unless a
//! setting allows it, such requests go to public addresses only, or a user could make the server
//! probe its own network (PostgreSQL on 127.0.0.1, a cloud metadata service).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Parses a URL a user names for the server to call or fetch: `http` or `https`, with a host, at
/// most `max_bytes` long, without a fragment and without credentials (such URLs are recorded in the event log, which
/// never holds a secret). The error is the sentence to answer with, naming `url`.
pub fn user_url(raw: &str, max_bytes: usize) -> Result<reqwest::Url, String> {
    if raw.len() > max_bytes {
        return Err(format!("url may have at most {max_bytes} bytes."));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("url is not a URL ({e})."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be an http or https URL.".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials (it is recorded in the event log).".into());
    }
    // A fragment is never sent to the server; one in the URL is a mistake.
    if url.fragment().is_some() {
        return Err("url must not have a fragment.".into());
    }
    Ok(url)
}

/// Whether `ip` is on this host or a private, link-local or otherwise non-public network: where requests
/// to user-named addresses go only when a setting allows it.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, shared address space (carrier-grade NAT).
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
                || v4.octets()[0] == 0
                // 198.18.0.0/15, benchmarking networks; 192.0.0.0/24, protocol assignments;
                // 240.0.0.0/4, reserved.
                || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
                || v4.octets()[..3] == [192, 0, 0]
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The IPv4 address an IPv6 one stands for, where it reaches it: mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks), NAT64
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x64, 0xff9b, 1, ..] => Some(tail()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// The address a URL names literally (`http://10.0.0.5/`), or `localhost`'s; `None` for other
/// host names (the resolver checks those) and for what is not a URL.
pub fn literal_address(url: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        url::Host::Domain(_) => None,
    }
}

/// A host name resolved to a private address, which the request may not go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is a private address")]
pub struct PrivateAddress(pub IpAddr);

/// Resolves a host name, refusing it if any of its addresses is private. Installed as the
/// client's resolver, it checks the addresses the client then connects to, so a name cannot
/// resolve to a public address for a check and a private one for the request.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addrs.iter().find(|a| is_private(a.ip())) {
                return Err(Box::new(PrivateAddress(private.ip())) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The environment variables reqwest's clients take a proxy from.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Whether the environment names a proxy, which reqwest's clients then use. A request through a
/// proxy has its host name resolved by the proxy, past [`PublicOnly`], so such requests are
/// checked with [`private_target`] first.
pub fn proxied() -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}

/// Why a request through a proxy may not go to `url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error(transparent)]
    Private(#[from] PrivateAddress),
    /// The name does not resolve here: only the proxy would know where it leads.
    #[error("{0} does not resolve on this server, so it cannot be checked for private addresses")]
    Unresolved(String),
}

/// Checks, for a request a proxy will make, where `url` leads: the address it names, or every
/// address its host name resolves to here. The proxy resolves the name again; a name whose
/// answers change in between is not caught (without a proxy, [`PublicOnly`] checks the very
/// addresses the client connects to).
pub async fn private_target(url: &str) -> Result<(), Unreachable> {
    let url = reqwest::Url::parse(url).map_err(|_| Unreachable::Unresolved(url.to_string()))?;
    match target(&url)? {
        Target::Address(ip) => public(ip),
        Target::Name(host) => {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await;
            judged(&host, addrs)
        }
    }
}

/// [`private_target`] for a redirect, which reqwest's redirect policy decides synchronously: the
/// lookup blocks the calling thread (redirects of image downloads are rare and few).
pub fn private_target_blocking(url: &reqwest::Url) -> Result<(), Unreachable> {
    use std::net::ToSocketAddrs;
    match target(url)? {
        Target::Address(ip) => public(ip),
        Target::Name(host) => {
            let addrs = (host.as_str(), 0).to_socket_addrs();
            judged(&host, addrs)
        }
    }
}

enum Target {
    Address(IpAddr),
    Name(String),
}

fn target(url: &reqwest::Url) -> Result<Target, Unreachable> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(Target::Address(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(Target::Address(IpAddr::V6(ip))),
        Some(url::Host::Domain(d)) => Ok(Target::Name(d.to_string())),
        None => Err(Unreachable::Unresolved(url.to_string())),
    }
}

/// Every address `host` resolved to must be public, and there must be one.
fn judged(
    host: &str,
    addrs: std::io::Result<impl Iterator<Item = SocketAddr>>,
) -> Result<(), Unreachable> {
    let mut any = false;
    for addr in addrs.map_err(|_| Unreachable::Unresolved(host.to_string()))? {
        public(addr.ip())?;
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(Unreachable::Unresolved(host.to_string()))
    }
}

fn public(ip: IpAddr) -> Result<(), Unreachable> {
    if is_private(ip) {
        return Err(PrivateAddress(ip).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_this_host_is_refused() {
        let refused = PublicOnly
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(refused.to_string().contains("private address"), "{refused}");
    }

    #[test]
    fn literal_addresses_are_read_from_urls() {
        assert_eq!(
            literal_address("http://127.0.0.1:9/x"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            literal_address("http://LOCALHOST/x"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(literal_address("https://example.com/x"), None);
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[tokio::test]
    async fn before_a_proxy_a_private_target_is_refused_by_address_or_by_name() {
        let loopback = Err(Unreachable::Private(PrivateAddress(IpAddr::V4(
            Ipv4Addr::LOCALHOST,
        ))));
        assert_eq!(private_target("http://127.0.0.1:9/x").await, loopback);
        assert_eq!(
            private_target_blocking(&url("http://127.0.0.1:9/x")),
            loopback
        );
        assert_eq!(private_target("http://localhost:9/x").await, loopback);
        assert_eq!(
            private_target_blocking(&url("http://localhost:9/x")),
            loopback
        );
        assert_eq!(
            private_target("http://169.254.169.254/latest/meta-data").await,
            Err(Unreachable::Private(PrivateAddress(
                "169.254.169.254".parse().unwrap()
            )))
        );
        assert_eq!(private_target("http://93.184.215.14/x").await, Ok(()));
    }

    #[tokio::test]
    async fn before_a_proxy_a_name_that_does_not_resolve_here_is_refused() {
        let name = "voidvm-no-such-host.invalid";
        let expected = Err(Unreachable::Unresolved(name.to_string()));
        assert_eq!(private_target(&format!("http://{name}/x")).await, expected);
        assert_eq!(
            private_target_blocking(&url(&format!("http://{name}/x"))),
            expected
        );
    }
}
