//! Name resolution and routes.
//!
//! A name lookup (`getaddrinfo`) cannot be interrupted and has no time limit but the resolver's
//! own (resolv.conf's `timeout` × `attempts` × name servers: 5 s to minutes), so each runs on a
//! thread of its own while the caller waits at most its time limit, as ureq's own resolver does.
//! Lookups happen only when a connection opens (kept-alive heartbeats resolve nothing), and
//! literal addresses and `localhost` need neither a lookup nor a thread. `localhost` is loopback
//! even where there is no /etc/hosts, as in a `FROM scratch` image.
//!
//! A lookup given up on keeps its thread until the resolver gives up too. At most
//! [`MAX_UNFINISHED_LOOKUPS`] run at once; past that a lookup fails at once rather than adding
//! threads (the systemd unit allows the agent 16 tasks).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::config::ControlPlaneUrl;

/// Time allowed to look up the control plane's (or the proxy's) name.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Lookups that may be running at once, including those already given up on.
pub const MAX_UNFINISHED_LOOKUPS: usize = 4;

static UNFINISHED_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// The addresses of `host`, a name or an IP literal (IPv6 with or without brackets). A lookup
/// that has no answer within `timeout` is an error of kind `TimedOut`.
pub fn resolve(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    if let Some(addresses) = without_lookup(host, port) {
        return Ok(addresses);
    }
    // The answer, or `None` while the lookup runs. A mutex and a condition variable rather than
    // a channel: the same wait, in less code (the binary is measured).
    let slot: Arc<(Mutex<Option<Answer>>, Condvar)> = Arc::default();
    let filled = Arc::clone(&slot);
    spawn_lookup(host, port, "name lookup", move |addresses| {
        let (answer, ready) = &*filled;
        // Nobody waits any more when the caller gave up: it is dropped with the slot then.
        *answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(addresses);
        ready.notify_one();
    })?;
    let (answer, ready) = &*slot;
    let answer = answer.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut answer, _) = ready
        .wait_timeout_while(answer, timeout, |answer| answer.is_none())
        .unwrap_or_else(PoisonError::into_inner);
    answer
        .take()
        .unwrap_or_else(|| Err(no_answer(host, timeout)))
}

/// What a lookup thread hands back.
pub type Answer = io::Result<Vec<SocketAddr>>;

/// The addresses of an IP literal or of `localhost`, which need no lookup; `None` for a name.
pub fn without_lookup(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    })
}

/// Starts `getaddrinfo` for `host` on a thread named `thread`, which hands the addresses (never
/// an empty list) to `answer`. Fails at once when [`MAX_UNFINISHED_LOOKUPS`] are still running.
/// The caller decides how long to wait.
pub fn spawn_lookup(
    host: &str,
    port: u16,
    thread: &str,
    answer: impl FnOnce(Answer) + Send + 'static,
) -> io::Result<()> {
    if UNFINISHED_LOOKUPS.fetch_add(1, Ordering::SeqCst) >= MAX_UNFINISHED_LOOKUPS {
        UNFINISHED_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "earlier name lookups are still unanswered; check the node's DNS servers (/etc/resolv.conf)",
        ));
    }
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let spawned = std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let addresses = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
                .and_then(|addresses| match addresses.is_empty() {
                    true => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} has no address"),
                    )),
                    false => Ok(addresses),
                });
            UNFINISHED_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
            answer(addresses);
        });
    spawned.map(drop).inspect_err(|_| {
        UNFINISHED_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
    })
}

/// The error of a lookup of `host` not answered within `timeout`.
pub fn no_answer(host: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no answer to the name lookup of {} within {}s; check the node's DNS servers (/etc/resolv.conf)",
            host.trim_start_matches('[').trim_end_matches(']'),
            timeout.as_secs_f64()
        ),
    )
}

/// The local address the kernel would send from to reach the control plane: a UDP socket is
/// `connect`ed to it (which sends nothing) and asked for its own address.
pub fn local_address_towards(url: &ControlPlaneUrl) -> io::Result<IpAddr> {
    let mut last_error = None;
    for target in resolve(url.host(), url.port(), RESOLVE_TIMEOUT)? {
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
            resolve("10.1.2.3", 80, RESOLVE_TIMEOUT).unwrap(),
            vec!["10.1.2.3:80".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 81, RESOLVE_TIMEOUT).unwrap(),
            vec!["[::1]:81".parse().unwrap()]
        );
        let local = resolve("LocalHost.", 8080, RESOLVE_TIMEOUT).unwrap();
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
