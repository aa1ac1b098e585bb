//! Which address a request comes from, for cookieless ids and rate limits alike.
//!
//! Without `TRUST_PROXY` it is the TCP peer. With it, it is the last address of the
//! last `X-Forwarded-For` header: a client can write anything into that header, but a
//! reverse proxy appends the address it received the request from, so the last entry
//! is the one the proxy vouches for. Behind a chain of proxies, have the outermost one
//! replace the header rather than append to it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// The client's address, or `None` when there is no peer (a router called directly).
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_proxy: bool,
) -> Option<IpAddr> {
    let forwarded = trust_proxy
        .then(|| headers.get_all("x-forwarded-for").iter().next_back())
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok());
    forwarded.or(peer.map(|p| p.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_proxys_entry_counts_and_only_when_trusted() {
        let peer = Some("10.0.0.9:4000".parse().unwrap());
        let forged = headers(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(
            client_ip(&forged, peer, true),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(&forged, peer, false),
            Some("10.0.0.9".parse().unwrap())
        );
        let two_lines = headers(&["6.6.6.6", "198.51.100.2"]);
        assert_eq!(
            client_ip(&two_lines, peer, true),
            Some("198.51.100.2".parse().unwrap())
        );
        assert_eq!(
            client_ip(&headers(&["junk"]), peer, true),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(client_ip(&HeaderMap::new(), None, true), None);
    }
}
