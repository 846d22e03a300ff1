//! HTTPS: a throwaway CA, server and client certificates made at test time, and the real binary
//! against the test control plane served over TLS.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use control_plane::TlsIdentity;
use support::pki::{Ca, scratch_dir, write};
use support::{Agent, ControlPlane, WAIT, assert_config_error, command, heartbeats};

#[test]
fn private_ca_is_trusted_by_ip_and_by_name() {
    let ca = Ca::new("miaas test CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["localhost", "127.0.0.1"]));
    let dir = scratch_dir();
    let ca_file = write(&dir, "ca.pem", &ca.pem());

    let mut agent = Agent::start(&control_plane.url(), &[("CA_CERT", &ca_file)]);
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
    assert!(
        !agent.output().contains("unencrypted"),
        "no plain-HTTP warning over TLS"
    );

    let by_name = format!("https://localhost:{}", control_plane.addr().port());
    let mut agent = Agent::start(&by_name, &[("CA_CERT", &ca_file), ("NODE_NAME", "by-name")]);
    agent.expect_line("Heartbeat sent", WAIT);
}

#[test]
fn untrusted_server_is_refused_and_retried() {
    let ca = Ca::new("unknown CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    // Mozilla's roots do not include the test CA. At debug, each attempt is logged, not only
    // the first of a run of failures.
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "debug")]);
    let expected = "Failed to register with control plane: TLS: the control plane's certificate is not signed by a trusted CA (unknown issuer)";
    agent.expect_line(expected, WAIT);
    agent.expect_line(expected, WAIT);
    assert!(
        control_plane.requests().is_empty(),
        "nothing was sent over an untrusted connection"
    );
    assert!(control_plane.nodes().is_empty());
}

#[test]
fn a_private_ca_replaces_the_public_roots() {
    // A certificate from another private CA is refused even though CA_CERT is set.
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let control_plane = ControlPlane::start_tls(&other.server(&["127.0.0.1"]));
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("CA_CERT", &write(&dir, "ca.pem", &trusted.pem()))],
    );
    agent.expect_line("unknown issuer", WAIT);
}

#[test]
fn wrong_host_name_is_refused() {
    let ca = Ca::new("miaas test CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["cp.example.com"]));
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("CA_CERT", &write(&dir, "ca.pem", &ca.pem()))],
    );
    agent.expect_line(
        "Failed to register with control plane: TLS: the control plane's certificate is not valid for the host name in CONTROL_PLANE_URL (wrong host name)",
        WAIT,
    );
    assert!(control_plane.nodes().is_empty());
}

#[test]
fn expired_certificate_is_refused() {
    let ca = Ca::new("miaas test CA");
    let (cert_chain_pem, key_pem) = ca.issue(&["127.0.0.1"], true);
    let control_plane = ControlPlane::start_tls(&TlsIdentity {
        cert_chain_pem,
        key_pem,
        client_ca_pem: None,
    });
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("CA_CERT", &write(&dir, "ca.pem", &ca.pem()))],
    );
    agent.expect_line(
        "Failed to register with control plane: TLS: the control plane's certificate has expired",
        WAIT,
    );
}

#[test]
fn a_ca_certificate_as_the_servers_own_is_explained() {
    // A self-signed CA:TRUE certificate served by the control plane and given as CA_CERT: a
    // common shortcut that TLS refuses (webpki's CaUsedAsEndEntity).
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let control_plane = ControlPlane::start_tls(&TlsIdentity {
        cert_chain_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        client_ca_pem: None,
    });
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("CA_CERT", &write(&dir, "ca.pem", &certificate.pem()))],
    );
    agent.expect_line(
        "Failed to register with control plane: TLS: the control plane's certificate is a CA certificate (CA:TRUE), which TLS does not accept as a server's own; issue the control plane a server certificate signed by that CA, and put the CA in CA_CERT",
        WAIT,
    );
    assert!(control_plane.nodes().is_empty());
}

#[test]
fn mutual_tls_required_and_satisfied() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let mut identity = server_ca.server(&["127.0.0.1"]);
    identity.client_ca_pem = Some(client_ca.pem());
    let control_plane = ControlPlane::start_tls(&identity);
    let dir = scratch_dir();
    let ca_file = write(&dir, "ca.pem", &server_ca.pem());

    // Without a client certificate the server ends the handshake; depending on who is faster
    // the agent sees the server's alert or its own write fail, and says what to do either way.
    let mut agent = Agent::start(&control_plane.url(), &[("CA_CERT", &ca_file)]);
    let line = agent.expect_line("Failed to register with control plane: ", WAIT);
    assert!(
        line.contains("requires a client certificate does this: set CLIENT_CERT and CLIENT_KEY"),
        "{line}"
    );
    assert!(control_plane.nodes().is_empty());
    drop(agent);

    let (client_cert, client_key) = client_ca.issue(&["node-1"], false);
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("CA_CERT", &ca_file),
            ("CLIENT_CERT", &write(&dir, "client.pem", &client_cert)),
            ("CLIENT_KEY", &write(&dir, "client.key", &client_key)),
        ],
    );
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
}

#[test]
fn connections_are_kept_and_sessions_resumed() {
    let ca = Ca::new("miaas test CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    let dir = scratch_dir();
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let agent = Agent::start(
        &control_plane.url(),
        &[("CA_CERT", &ca_file), ("HEARTBEAT_INTERVAL", "0.05")],
    );
    assert!(control_plane.wait_until(WAIT, |r| heartbeats(r).len() >= 5));
    // The node channel (deployments are on) is a connection of its own, by design.
    let connections: std::collections::BTreeSet<u64> = control_plane
        .requests()
        .iter()
        .filter(|r| !r.is_channel())
        .map(|r| r.connection)
        .collect();
    assert_eq!(
        connections.len(),
        1,
        "heartbeats share one kept-alive TLS connection"
    );
    // Gone, with its connection, before the server starts closing idle connections, so that
    // every handshake from here on is the second agent's (the server counts a handshake when
    // its connection ends).
    drop(agent);
    assert!(control_plane.wait_until(WAIT, |_| control_plane.open_connections() == 0));

    // A server that closes idle connections: each heartbeat reconnects, resuming the session.
    control_plane.set_keep_alive_timeout(Some(Duration::from_millis(20)));
    let before = control_plane.tls_handshakes();
    let handshakes = || {
        let (full, resumed) = control_plane.tls_handshakes();
        (full - before.0, resumed - before.1)
    };
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("CA_CERT", &ca_file),
            ("HEARTBEAT_INTERVAL", "0.2"),
            ("NODE_NAME", "resumer"),
        ],
    );
    let resumed_three_times = control_plane.wait_until(WAIT, |_| handshakes().1 >= 3);
    let (full, resumed) = handshakes();
    assert!(
        resumed_three_times && full == 1,
        "the agent's first connection needs a full handshake, each later one resumes: \
         {full} full and {resumed} resumed handshakes; the agent said:\n{}",
        agent.output()
    );
}

#[test]
fn unusable_pem_files_are_configuration_errors() {
    let dir = scratch_dir();
    let garbage = write(
        &dir,
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let empty = write(&dir, "empty.pem", "");
    let ca = Ca::new("miaas test CA");
    let (cert, _) = ca.issue(&["node"], false);
    let cert_file = write(&dir, "cert.pem", &cert);
    for (env, named) in [
        (vec![("CA_CERT", garbage.as_str())], "CA_CERT"),
        (vec![("CA_CERT", empty.as_str())], "CA_CERT"),
        (vec![("CA_CERT", "/nonexistent/ca.pem")], "CA_CERT"),
        (vec![("CLIENT_CERT", cert_file.as_str())], "CLIENT_KEY"),
        (
            vec![
                ("CLIENT_CERT", cert_file.as_str()),
                ("CLIENT_KEY", cert_file.as_str()),
            ],
            "CLIENT_KEY",
        ),
    ] {
        let output = command(&env).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
    }
}

#[test]
fn pem_files_are_bounded_regular_files() {
    let dir = scratch_dir();
    let ca = Ca::new("miaas test CA");
    let (cert, key) = ca.issue(&["node"], false);
    let cert_file = write(&dir, "cert.pem", &cert);
    let key_file = write(&dir, "key.pem", &key);
    // A file just over the limit, sparse, with a certificate at its start.
    let large = write(&dir, "large.pem", &cert);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&large)
        .unwrap()
        .set_len((1 << 20) + 1)
        .unwrap();
    // A FIFO nobody writes to: opening it to read would wait for ever.
    let fifo = dir.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fifo.to_string_lossy().into_owned();
    for (env, setting, says) in [
        (
            vec![("CA_CERT", "/dev/zero")],
            "CA_CERT",
            "character device",
        ),
        (vec![("CA_CERT", fifo.as_str())], "CA_CERT", "FIFO"),
        (
            vec![("CA_CERT", large.as_str())],
            "CA_CERT",
            "larger than 1 MiB",
        ),
        (vec![("CA_CERT", "/tmp")], "CA_CERT", "directory"),
        (
            vec![
                ("CLIENT_CERT", "/dev/zero"),
                ("CLIENT_KEY", key_file.as_str()),
            ],
            "CLIENT_CERT",
            "character device",
        ),
        (
            vec![
                ("CLIENT_CERT", cert_file.as_str()),
                ("CLIENT_KEY", "/dev/zero"),
            ],
            "CLIENT_KEY",
            "character device",
        ),
        (
            vec![
                ("CLIENT_CERT", cert_file.as_str()),
                ("CLIENT_KEY", fifo.as_str()),
            ],
            "CLIENT_KEY",
            "FIFO",
        ),
        (
            vec![
                ("CLIENT_CERT", large.as_str()),
                ("CLIENT_KEY", key_file.as_str()),
            ],
            "CLIENT_CERT",
            "larger than 1 MiB",
        ),
    ] {
        let stderr = assert_config_error(&env, setting);
        assert!(stderr.contains(says), "{env:?}: {stderr}");
    }
}

#[test]
fn plain_build_refuses_https() {
    let binary = plain_binary();
    let output = Command::new(&binary)
        .env_clear()
        .env("CONTROL_PLANE_URL", "https://127.0.0.1:8443")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CONTROL_PLANE_URL") && stderr.contains("`tls` feature"),
        "{stderr}"
    );
    let output = Command::new(&binary)
        .env_clear()
        .env("CA_CERT", "/etc/hostname")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// The agent built without default features: `MIAAS_AGENT_PLAIN_BIN`, or built here.
fn plain_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MIAAS_AGENT_PLAIN_BIN") {
        return PathBuf::from(path);
    }
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plain");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--no-default-features",
            "--bin",
            "miaas-agent",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building the plain-HTTP agent failed");
    target_dir.join("debug/miaas-agent")
}
