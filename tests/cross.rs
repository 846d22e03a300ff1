//! The release binaries for other architectures, run under qemu-user against the test control
//! plane: they must be static, register and heartbeat like the native one.
//!
//! The binaries come from `scripts/build.sh`; `scripts/test.sh` builds them and names them in
//! `MIAAS_X86_64_BIN`, `MIAAS_AARCH64_BIN` and `MIAAS_ARMV7_BIN`. A plain `cargo test` without
//! those variables skips each check with a loud line, and so do the empty-root checks without
//! root, except in CI (`CI` set), where either fails.

mod empty_root;
mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use empty_root::EmptyRoot;
use support::{Agent, ControlPlane, WAIT, count_heartbeats, heartbeats, registrations};

/// The binary named by `variable`, or `None` after a skip notice (outside CI; in CI a missing
/// variable fails).
fn release_binary(variable: &str) -> Option<PathBuf> {
    let Some(path) = std::env::var_os(variable) else {
        support::skip(&format!(
            "{variable} is not set; run `bash scripts/test.sh` (or scripts/build.sh and set it) to test it"
        ));
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{variable}={} is not a file (run scripts/build.sh)",
        path.display()
    );
    Some(path)
}

/// The binary named by `variable` where it can also be run alone in an empty root (new
/// namespaces and chroot: root); else `None` after a skip notice (outside CI).
fn empty_root_binary(variable: &str) -> Option<PathBuf> {
    let binary = release_binary(variable)?;
    if !empty_root::can_chroot() {
        support::skip("cannot make namespaces or chroot here (needs root)");
        return None;
    }
    Some(binary)
}

/// The qemu-user emulator, which must exist when a foreign binary is to be tested.
fn emulator(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{name} is missing: install qemu-user-static (scripts/setup.sh does)"
    );
    path
}

fn file_says(path: &Path) -> String {
    let output = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("`file` runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_static(path: &Path, architecture: &str) {
    let description = file_says(path);
    assert!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "{} is not static: {description}",
        path.display()
    );
    assert!(
        description.contains(architecture),
        "{} is not {architecture}: {description}",
        path.display()
    );
}

/// Runs `binary` under `qemu` against a test control plane and waits for registration and three
/// heartbeats, each answered 200 and carrying the node's figures.
fn registers_and_heartbeats(binary: &Path, qemu: &str) {
    let control_plane = ControlPlane::start();
    let mut command = Command::new(emulator(qemu));
    command.arg(binary).env_clear();
    for (name, value) in [
        ("CONTROL_PLANE_URL", control_plane.url().as_str()),
        ("HEARTBEAT_INTERVAL", "0.2"),
        ("NODE_NAME", "qemu-node"),
    ] {
        command.env(name, value);
    }
    let mut agent = Agent::spawn(command);
    let enough = control_plane.wait_until(WAIT, |requests| count_heartbeats(requests, 200) >= 3);
    assert!(
        enough,
        "no 3 heartbeats; the agent said:\n{}",
        agent.output()
    );
    let requests = control_plane.requests();
    let registration = registrations(&requests)[0].json().unwrap();
    assert_eq!(registration["name"], "qemu-node");
    assert_eq!(
        registration["capabilities"]["cpu_count"],
        support::node::cpu_count()
    );
    let beat = heartbeats(&requests)[2].json().unwrap();
    assert!(beat["mem_usage"].as_f64().unwrap() > 0.0, "{beat}");
    assert!(beat["disk_free_mb"].is_u64(), "{beat}");
    agent.expect_line("Heartbeat sent", WAIT);

    // SIGTERM reaches the emulated process: it exits 0 at once.
    agent.signal("TERM");
    let status = agent.wait_exit(std::time::Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.output());
}

#[test]
fn x86_64_release_binary_is_static() {
    if let Some(binary) = release_binary("MIAAS_X86_64_BIN") {
        assert_static(&binary, "x86-64");
    }
}

#[test]
fn aarch64_binary_registers_and_heartbeats_under_qemu() {
    if let Some(binary) = release_binary("MIAAS_AARCH64_BIN") {
        assert_static(&binary, "ARM aarch64");
        registers_and_heartbeats(&binary, "qemu-aarch64-static");
    }
}

#[test]
fn armv7_binary_registers_and_heartbeats_under_qemu() {
    if let Some(binary) = release_binary("MIAAS_ARMV7_BIN") {
        assert_static(&binary, "32-bit LSB executable, ARM");
        registers_and_heartbeats(&binary, "qemu-arm-static");
    }
}

/// How the empty root lets the agent find `control-plane.test`.
enum Lookup {
    /// A line in /etc/hosts.
    Hosts,
    /// /etc/resolv.conf naming a DNS server (`DnsServer`) on a loopback address.
    Dns(Ipv4Addr),
}

/// The armv7 build is static glibc, whose name lookups go through NSS. In an empty root (no
/// nsswitch.conf, no libnss_*.so) a name other than localhost must still resolve, from
/// /etc/hosts and through DNS; the aarch64 musl build is checked the same way.
fn resolves_a_host_name_in_an_empty_root(binary: &Path, qemu: &str, lookup: Lookup) {
    let control_plane = ControlPlane::start();
    let kind = match lookup {
        Lookup::Hosts => "hosts",
        Lookup::Dns(_) => "dns",
    };
    let root = EmptyRoot::new(&format!("resolve-{kind}-{qemu}"), binary, None);
    match lookup {
        Lookup::Hosts => root.add_etc_file("hosts", "127.0.0.1 control-plane.test\n"),
        Lookup::Dns(server) => root.add_etc_file("resolv.conf", &format!("nameserver {server}\n")),
    }
    root.add_emulator(&emulator(qemu));
    let url = format!("http://control-plane.test:{}", control_plane.addr().port());
    let command = root.command(
        true,
        &[
            ("CONTROL_PLANE_URL", url.as_str()),
            ("HEARTBEAT_INTERVAL", "0.2"),
            ("NODE_NAME", "empty-root"),
        ],
    );
    let mut agent = Agent::spawn(command);
    let registered = control_plane.wait_until(WAIT, |requests| !heartbeats(requests).is_empty());
    assert!(
        registered,
        "{} did not reach control-plane.test from an empty root; it said:\n{}",
        binary.display(),
        agent.output()
    );
}

#[test]
fn armv7_static_glibc_resolves_names_from_etc_hosts_in_an_empty_root() {
    if let Some(binary) = empty_root_binary("MIAAS_ARMV7_BIN") {
        resolves_a_host_name_in_an_empty_root(&binary, "qemu-arm-static", Lookup::Hosts);
    }
}

#[test]
fn aarch64_musl_resolves_names_from_etc_hosts_in_an_empty_root() {
    if let Some(binary) = empty_root_binary("MIAAS_AARCH64_BIN") {
        resolves_a_host_name_in_an_empty_root(&binary, "qemu-aarch64-static", Lookup::Hosts);
    }
}

// The DNS server binds port 53 (root) only once the test knows it can run: without root the
// test skips rather than failing on the bind.

#[test]
fn armv7_static_glibc_resolves_names_through_dns_in_an_empty_root() {
    if let Some(binary) = empty_root_binary("MIAAS_ARMV7_BIN") {
        let dns = DnsServer::start(53);
        resolves_a_host_name_in_an_empty_root(&binary, "qemu-arm-static", Lookup::Dns(dns.address));
        assert!(dns.answered() > 0, "the DNS server was never asked");
    }
}

#[test]
fn aarch64_musl_resolves_names_through_dns_in_an_empty_root() {
    if let Some(binary) = empty_root_binary("MIAAS_AARCH64_BIN") {
        let dns = DnsServer::start(54);
        resolves_a_host_name_in_an_empty_root(
            &binary,
            "qemu-aarch64-static",
            Lookup::Dns(dns.address),
        );
        assert!(dns.answered() > 0, "the DNS server was never asked");
    }
}

/// A DNS server on port 53 of a loopback address of its own (resolv.conf cannot name a port),
/// answering every A query with 127.0.0.1 and every other query with no record.
struct DnsServer {
    address: Ipv4Addr,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start(tag: u8) -> DnsServer {
        // 127.53.<tag>.<pid>: each test and each test process its own address.
        let address = Ipv4Addr::new(127, 53, tag, (std::process::id() % 250 + 1) as u8);
        let socket = UdpSocket::bind((address, 53)).expect("can bind port 53 (needs root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&answered), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut query = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut query) else {
                    continue;
                };
                if let Some(answer) = dns_answer(&query[..len]) {
                    let _ = socket.send_to(&answer, from);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        DnsServer {
            address,
            answered,
            stop,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The answer to one query (RFC 1035): the header with the query's id, the question, and for
/// type A one record pointing at 127.0.0.1.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    // The question's name is labels up to a zero byte after the 12-byte header; then type, class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
    let mut answer = Vec::with_capacity(64);
    answer.extend_from_slice(&query[..2]); // id
    answer.extend_from_slice(&[0x81, 0x80]); // a response, recursion available, no error
    answer.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    answer.extend_from_slice(question);
    if is_a {
        // The name by pointer to the question, type A, class IN, TTL 60, 4 bytes of address.
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(answer)
}
