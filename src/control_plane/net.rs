//! Name resolution and routes, done on the calling thread.
//!
//! ureq's own resolver starts a thread per lookup once a timeout is set; the agent resolves
//! only when it opens a connection (kept-alive heartbeats resolve nothing), so it does the lookup
//! inline. `localhost` is loopback even where there is no /etc/hosts, as in a `FROM scratch`
//! image.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::config::ControlPlaneUrl;

/// The addresses of `host`, a name or an IP literal (IPv6 with or without brackets).
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    let addresses: Vec<SocketAddr> = (bare, port).to_socket_addrs()?.collect();
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{bare} has no address"),
        ));
    }
    Ok(addresses)
}

/// The local address the kernel would send from to reach the control plane: a UDP socket is
/// `connect`ed to it (which sends nothing) and asked for its own address.
pub fn local_address_towards(url: &ControlPlaneUrl) -> io::Result<IpAddr> {
    let mut last_error = None;
    for target in resolve(url.host(), url.port())? {
        let unspecified: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let attempt = UdpSocket::bind((unspecified, 0))
            .and_then(|socket| socket.connect(target).map(|()| socket))
            .and_then(|socket| socket.local_addr());
        match attempt {
            Ok(local) => return Ok(local.ip()),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to route to")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_need_no_lookup() {
        assert_eq!(
            resolve("10.1.2.3", 80).unwrap(),
            vec!["10.1.2.3:80".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 81).unwrap(),
            vec!["[::1]:81".parse().unwrap()]
        );
        let local = resolve("LocalHost.", 8080).unwrap();
        assert_eq!(local[0], "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn route_to_loopback_is_from_loopback() {
        let url = ControlPlaneUrl::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            local_address_towards(&url).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }
}
