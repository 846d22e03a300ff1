//! Partition: the agent and the control plane in two network namespaces joined by a veth pair.
//! The link is cut (packets vanish, nothing is refused) for longer than the agent's request
//! timeout, until the agent has given up on its ticks and is trying heartbeats with backoff; then
//! it is restored, and heartbeats must resume, with the same registration, within one interval
//! plus the backoff (plus the connect timeout of an attempt already on its way when the link
//! comes back).
//!
//! Needs root (`ip netns`); where namespaces cannot be made it says so and skips. Every address
//! used exists only inside the two namespaces this test creates and deletes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Agent, WAIT};

/// Heartbeat interval, and so also the backoff cap (1 s).
const INTERVAL: Duration = Duration::from_secs(1);
/// The agent's request and connect timeouts (README, "How it behaves").
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At least this long, and until the agent has given up on its ticks and is trying heartbeats
/// with backoff: well past the request timeout, so the heartbeat in flight when the link goes
/// times out.
const CUT: Duration = Duration::from_secs(20);
/// Room for a loaded CI machine on top of the bound.
const SLACK: Duration = Duration::from_secs(5);

const CP_ADDR: &str = "10.250.0.1";
const AGENT_ADDR: &str = "10.250.0.2";
const PORT: u16 = 8080;

fn ip_binary() -> Option<PathBuf> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// The two namespaces (and with them the veth pair), deleted when dropped.
struct Namespaces {
    ip: PathBuf,
    control_plane: String,
    agent: String,
}

impl Namespaces {
    /// Creates both namespaces, or says why it cannot.
    fn create(ip: &Path) -> Result<Namespaces, String> {
        let tag = std::process::id();
        let control_plane = format!("miaas-{tag}-cp");
        let agent = format!("miaas-{tag}-agent");
        // Left over by a killed run whose pid this one reuses (no live process has this pid).
        for stale in [&control_plane, &agent] {
            let _ = run(ip, &["netns", "del", stale]);
        }
        let first = run(ip, &["netns", "add", &control_plane]);
        if !first.status.success() {
            return Err(String::from_utf8_lossy(&first.stderr).trim().to_string());
        }
        let namespaces = Namespaces {
            ip: ip.to_path_buf(),
            control_plane,
            agent,
        };
        namespaces.ip(&["netns", "add", &namespaces.agent]);
        Ok(namespaces)
    }

    fn ip(&self, args: &[&str]) {
        let output = run(&self.ip, args);
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `ip netns exec NAMESPACE program args…`, with an empty environment plus `env`.
    fn command(&self, namespace: &str, program: &Path, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.ip);
        command
            .env_clear()
            .args(["netns", "exec", namespace])
            .arg(program);
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in [&self.control_plane, &self.agent] {
            let _ = run(&self.ip, &["netns", "del", namespace]);
        }
    }
}

fn run(ip: &Path, args: &[&str]) -> Output {
    Command::new(ip).args(args).output().expect("ip runs")
}

/// The test control plane's example binary (examples/control-plane.rs), which `cargo test`
/// builds next to the test binaries; built here if this test runs on its own.
fn control_plane_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join("control-plane");
    if !binary.exists() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--example", "control-plane"]);
        if cfg!(target_env = "musl") {
            build.args([
                "--target",
                &format!("{}-unknown-linux-musl", std::env::consts::ARCH),
            ]);
        }
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo runs").success());
    }
    assert!(binary.exists(), "no {}", binary.display());
    binary
}

#[test]
fn partition_longer_than_the_request_timeout_heartbeats_resume() {
    // Outside CI a machine without root or iproute2 skips this test with a notice; CI runs as
    // root with scripts/setup.sh done, so there a skip would hide a broken set-up and fails.
    let Some(ip) = ip_binary() else {
        support::skip("no `ip` command (install iproute2: scripts/setup.sh)");
        return;
    };
    let namespaces = match Namespaces::create(&ip) {
        Ok(namespaces) => namespaces,
        Err(reason) => {
            support::skip(&format!(
                "cannot create network namespaces here (needs root): {reason}"
            ));
            return;
        }
    };
    let tag = std::process::id();
    let (cp_link, agent_link) = (format!("mcp{tag}"), format!("mag{tag}"));
    let (cp_ns, agent_ns) = (&namespaces.control_plane, &namespaces.agent);
    // The pair is made directly inside the two namespaces: nothing appears in the host's.
    namespaces.ip(&[
        "link",
        "add",
        &cp_link,
        "netns",
        cp_ns,
        "type",
        "veth",
        "peer",
        "name",
        &agent_link,
        "netns",
        agent_ns,
    ]);
    for (namespace, link, addr) in [
        (cp_ns, &cp_link, CP_ADDR),
        (agent_ns, &agent_link, AGENT_ADDR),
    ] {
        namespaces.ip(&[
            "-n",
            namespace,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            link,
        ]);
        namespaces.ip(&["-n", namespace, "link", "set", link, "up"]);
        namespaces.ip(&["-n", namespace, "link", "set", "lo", "up"]);
    }

    let listen = format!("{CP_ADDR}:{PORT}");
    let url = format!("http://{listen}");
    let mut command = namespaces.command(cp_ns, &control_plane_binary(), &[]);
    command.args(["--listen", &listen]);
    // One line per request it answers, on stdout.
    let mut control_plane = Agent::spawn(command);
    control_plane.expect_line("listening on", WAIT);

    let interval = INTERVAL.as_secs_f64().to_string();
    let mut agent = Agent::spawn(namespaces.command(
        agent_ns,
        &support::binary(),
        &[
            ("CONTROL_PLANE_URL", url.as_str()),
            ("HEARTBEAT_INTERVAL", interval.as_str()),
            ("NODE_NAME", "partition"),
        ],
    ));
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    control_plane.expect_line("/heartbeat -> 200", WAIT);

    // Cut: the control plane's end goes down, so the agent's end loses its carrier and what it
    // sends vanishes: no refusal, no reset, only silence.
    let before_cut = agent.output().lines().count();
    let cut_at = Instant::now();
    namespaces.ip(&["-n", cp_ns, "link", "set", &cp_link, "down"]);
    let timed_out = agent.expect_line(
        "no complete answer within 10s",
        REQUEST_TIMEOUT + Duration::from_secs(10),
    );
    let requests_during_cut = control_plane.output().lines().count();
    // Three failures in a row (each at most the request or connect timeout) and it tries them
    // with backoff instead of on the ticks.
    let gave_up = agent.expect_line(
        "heartbeats failed in a row: trying again with backoff",
        REQUEST_TIMEOUT + 2 * REQUEST_TIMEOUT,
    );
    if let Some(left) = CUT.checked_sub(cut_at.elapsed()) {
        std::thread::sleep(left);
    }
    let cut_for = cut_at.elapsed();
    let during_cut = agent.output();
    assert_eq!(
        control_plane.output().lines().count(),
        requests_during_cut,
        "the control plane got requests while the link was down"
    );
    assert!(cut_for > REQUEST_TIMEOUT);

    let restored_at = Instant::now();
    namespaces.ip(&["-n", cp_ns, "link", "set", &cp_link, "up"]);
    let bound = INTERVAL + INTERVAL.max(Duration::from_secs(1)) + CONNECT_TIMEOUT;
    let resumed = agent.wait_for_line("Heartbeat sent: ", bound + SLACK);
    let resumed_after = restored_at.elapsed();
    let summary = format!(
        "partition: link down for {:.1} s (request timeout {} s); heartbeats resumed {:.1} s after \
         it came back (bound: interval {} s + backoff cap 1 s + connect timeout {} s, {} s slack)\n\
         partition: first failure: {timed_out}\npartition: then: {gave_up}\n\
         partition: the agent during the cut and after:\n{}",
        cut_for.as_secs_f64(),
        REQUEST_TIMEOUT.as_secs(),
        resumed_after.as_secs_f64(),
        INTERVAL.as_secs_f64(),
        CONNECT_TIMEOUT.as_secs(),
        SLACK.as_secs(),
        agent
            .output()
            .lines()
            .skip(before_cut)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{summary}");
    assert!(
        resumed.is_some(),
        "no heartbeat within {:?} of the link coming back:\n{summary}\nduring the cut:\n{during_cut}",
        bound + SLACK
    );
    assert!(resumed_after <= bound + SLACK, "{summary}");
    control_plane.expect_line("/heartbeat -> 200", WAIT);
    // The control plane kept the node: its token still works, so no registration.
    assert_eq!(
        agent.output().matches("Registered successfully").count(),
        1,
        "registered again after the partition:\n{summary}"
    );
}
