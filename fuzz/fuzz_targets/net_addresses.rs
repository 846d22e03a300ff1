//! The node's addresses (`node::fuzzing::Addresses::parse`: /proc/net/fib_trie, procfs's
//! /proc/net/route parser, /proc/net/if_inet6): any text gives addresses that parse back as
//! `address/prefix` with a prefix the address family allows, each IPv4 one a local address of
//! the fib_trie input, never a loopback IPv4 address.
//!
//! The input is the three files separated by NULs.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::{Addresses, local_ipv4};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut files = text.splitn(3, '\0');
    let (fib_trie, route, if_inet6) = (
        files.next().unwrap_or(""),
        files.next().unwrap_or(""),
        files.next().unwrap_or(""),
    );
    let local = local_ipv4(fib_trie);
    assert!(local.len() <= fib_trie.lines().count());
    for (_, entry) in Addresses::parse(fib_trie, route, if_inet6).entries {
        let (address, prefix) = entry.split_once('/').expect("address/prefix");
        let prefix: u8 = prefix.parse().expect("a prefix length");
        match address.parse::<IpAddr>().expect("an address") {
            IpAddr::V4(v4) => {
                assert!(prefix <= 32 && prefix > 0, "{entry}");
                assert!(local.contains(&v4) && !v4.is_loopback(), "{entry}");
            }
            IpAddr::V6(_) => assert!(prefix <= 128, "{entry}"),
        }
    }
});
