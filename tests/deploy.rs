//! Deployments end to end: the real agent binary, the project's control plane (deploys posted
//! to it travel down the node channel) and a real engine: podman's Docker-compatible service on a
//! private socket, with a local `FROM scratch` busybox image tagged under the names the files
//! use, so nothing is pulled. See `shared/deployments.md` and `docs/channel.md`.
#![cfg(feature = "deploy")]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::engine_proxy::{EngineProxy, Fault};
use support::podman::{Podman, text};
use support::{
    Agent, ControlPlane, WAIT, count_heartbeats, registrations, start_agent_with_channel,
};

const IMAGES: [&str; 3] = [
    "docker.io/library/postgres:16",
    "docker.io/library/redis:7",
    "docker.io/library/nginx:1",
];
const SECRET: &str = "pw-Zq81-never-shown";
/// Long enough for a few podman creates and starts on a loaded 2-core machine.
const APPLY_WAIT: Duration = Duration::from_secs(60);

/// Three services: `db` with a named volume and an interpolated password, `cache` after it,
/// `web` after `cache` with a port and an inline config. `sleep` as PID 1 ignores SIGTERM, so a
/// stop takes the whole `stop_grace_period`: `GRACE` sets it.
fn project(port: u16, web_mode: &str, grace: &str) -> String {
    format!(
        r#"
x-common: &common
  restart: unless-stopped
  stop_grace_period: {grace}
services:
  db:
    <<: *common
    image: postgres:16
    command: ["/busybox", "sleep", "3600"]
    environment:
      POSTGRES_PASSWORD: ${{DB_PASSWORD}}
    volumes:
      - data:/var/lib/postgresql/data
  cache:
    <<: *common
    image: redis:7
    command: ["/busybox", "sleep", "3600"]
    depends_on: [db]
  web:
    <<: *common
    image: nginx:1
    command: ["/busybox", "httpd", "-f", "-p", "8080"]
    environment:
      MODE: {web_mode}
    ports: ["127.0.0.1:{port}:8080"]
    depends_on:
      cache:
        condition: service_started
    configs:
      - source: web_conf
        target: /etc/web.conf
volumes:
  data: {{}}
configs:
  web_conf:
    content: |
      greeting=${{GREETING:-hello}}
"#
    )
}

#[track_caller]
fn no_podman(reason: &str) -> ! {
    panic!(
        "\n\n*** podman cannot serve its API on this machine, so deployments were not tested \
         against a real engine ***\n{reason}\n(scripts/setup.sh installs podman, runc and \
         busybox-static; the test needs root)\n"
    );
}

/// A test that cannot run here: fails under CI, else a notice libtest does not capture.
fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "deploy: cannot run in CI: {reason}"
    );
    let _ = std::io::stderr().write_all(format!("\n*** SKIPPED: {reason} ***\n").as_bytes());
}

struct Engine {
    podman: Podman,
    socket: PathBuf,
}

impl Engine {
    fn start(name: &str) -> Engine {
        let mut podman = Podman::new(name);
        let version = podman.output(&["version"]);
        if !version.status.success() {
            no_podman(&text(&version));
        }
        podman
            .build_busybox_image(IMAGES[0])
            .unwrap_or_else(|reason| no_podman(&reason));
        for name in &IMAGES[1..] {
            let tagged = podman.output(&["tag", IMAGES[0], name]);
            assert!(tagged.status.success(), "{}", text(&tagged));
        }
        let socket = podman
            .start_service()
            .unwrap_or_else(|reason| no_podman(&reason));
        Engine { podman, socket }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The deployment's containers: name → id.
    fn containers(&self, deployment: &str) -> BTreeMap<String, String> {
        let output = self.podman.output(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=io.miaas.deployment={deployment}"),
            "--format",
            "{{.Names}} {{.ID}} {{.State}}",
        ]);
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect()
    }

    fn running(&self, deployment: &str) -> usize {
        let output = self.podman.output(&[
            "ps",
            "--filter",
            &format!("label=io.miaas.deployment={deployment}"),
            "--filter",
            "status=running",
            "--format",
            "{{.ID}}",
        ]);
        String::from_utf8_lossy(&output.stdout).lines().count()
    }

    fn volumes(&self) -> Vec<String> {
        let output = self
            .podman
            .output(&["volume", "ls", "--format", "{{.Name}}"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn networks(&self) -> Vec<String> {
        let output = self
            .podman
            .output(&["network", "ls", "--format", "{{.Name}}"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| *name != "podman")
            .map(str::to_string)
            .collect()
    }
}

fn deploy(cp: &ControlPlane, node_id: &str, body: Value) -> u64 {
    let (status, answer) = cp.deploy(node_id, &body);
    assert_eq!(status, 202, "{answer}");
    answer["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no generation in {answer}"))
}

fn apply_body(id: &str, compose: &str) -> Value {
    json!({"deployment_id": id, "template_id": "e2e", "action": "apply",
           "rendered_compose": compose,
           "env": {"DB_PASSWORD": SECRET, "GREETING": "hi"}})
}

/// Waits for a `status` of `id` at `generation` with `state`; the message.
#[track_caller]
fn wait_status(
    cp: &ControlPlane,
    agent: &mut Agent,
    id: &str,
    generation: u64,
    state: &str,
    timeout: Duration,
) -> Value {
    let found = |messages: &[control_plane::ChannelMessage]| {
        messages
            .iter()
            .rev()
            .find(|m| {
                m.kind() == Some("status")
                    && m.json["deployment_id"] == id
                    && m.json["generation"] == generation
                    && m.json["status"] == state
            })
            .map(|m| m.json.clone())
    };
    if cp.wait_until_channel(timeout, |messages| found(messages).is_some()) {
        return found(&cp.channel_messages()).unwrap();
    }
    let statuses: Vec<String> = cp
        .channel_messages()
        .iter()
        .filter(|m| m.json["deployment_id"] == id)
        .map(|m| {
            format!(
                "{} {} {} {}",
                m.json["type"], m.json["generation"], m.json["status"], m.json["message"]
            )
        })
        .collect();
    panic!(
        "no {state} status for {id} generation {generation} within {timeout:?}; statuses:\n{}\nthe agent said:\n{}",
        statuses.join("\n"),
        agent.output()
    );
}

/// No channel message and no agent log line carries the env's secret value.
#[track_caller]
fn assert_secret_never_shown(cp: &ControlPlane, agent: &mut Agent) {
    for message in cp.channel_messages() {
        assert!(!message.text.contains(SECRET), "{}", message.text);
    }
    let output = agent.output();
    assert!(!output.contains(SECRET), "the secret in the log:\n{output}");
}

#[test]
fn a_project_runs_converges_and_is_removed_and_a_bad_file_creates_nothing() {
    let engine = Engine::start("deploy-e2e");
    let cp = ControlPlane::start();
    let (mut agent, node) =
        start_agent_with_channel(&cp, "deploy-e2e", &[("DOCKER_HOST", &engine.docker_host())]);
    let port = support::published_port();
    let id = "shop-e2e";

    // A bad file: failed, naming the key; a Kubernetes manifest: said so. Nothing is created.
    let mut bad = apply_body(
        id,
        &project(port, "one", "1s")
            .replace("    image: redis:7\n", "    image: redis:7\n    build: .\n"),
    );
    bad["deployment_id"] = json!("bad-e2e");
    let generation = deploy(&cp, &node, bad);
    let failed = wait_status(&cp, &mut agent, "bad-e2e", generation, "failed", WAIT);
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("services.cache.build"), "{message}");
    let mut manifest = apply_body(
        "k8s-e2e",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    );
    manifest["template_id"] = json!("k8s");
    let generation = deploy(&cp, &node, manifest);
    let failed = wait_status(&cp, &mut agent, "k8s-e2e", generation, "failed", WAIT);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("Kubernetes manifests are not supported yet"),
        "{failed}"
    );
    // An image named from the env: the engine's failure names it, the status hides the value.
    let from_env = apply_body(
        "env-image-e2e",
        "services:\n  a:\n    image: registry.invalid/${DB_PASSWORD}:1\n",
    );
    let generation = deploy(&cp, &node, from_env);
    let failed = wait_status(&cp, &mut agent, "env-image-e2e", generation, "failed", WAIT);
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("registry.invalid/<env DB_PASSWORD>:1"),
        "{message}"
    );
    assert!(engine.containers("env-image-e2e").is_empty());
    assert!(engine.containers("bad-e2e").is_empty());
    assert!(engine.volumes().is_empty(), "{:?}", engine.volumes());
    assert!(engine.networks().is_empty(), "{:?}", engine.networks());

    // The project: pending at once, then running, each service with its container.
    let began = Instant::now();
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "one", "1s")));
    wait_status(&cp, &mut agent, id, generation, "pending", WAIT);
    let running = wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let to_running = began.elapsed();
    let answer = cp.deployment(id).expect("GET /api/v1/deployments/{id}");
    assert_eq!(answer["status"], "running", "{answer}");
    let services: BTreeMap<String, String> = running["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["container"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["cache", "db", "web"],
        "{running}"
    );
    let first = engine.containers(id);
    assert_eq!(first.len(), 3, "{first:?}");
    for container in services.values() {
        assert!(
            first.contains_key(container),
            "{container} not in {first:?}"
        );
    }
    assert_eq!(engine.running(id), 3);
    let config =
        engine
            .podman
            .output(&["exec", &services["web"], "/busybox", "cat", "/etc/web.conf"]);
    assert_eq!(
        String::from_utf8_lossy(&config.stdout),
        "greeting=hi\n",
        "{}",
        text(&config)
    );

    // The same again: acknowledged, nothing recreated.
    let began = Instant::now();
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "one", "1s")));
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let unchanged = began.elapsed();
    assert_eq!(
        engine.containers(id),
        first,
        "the same file recreated containers"
    );

    // One service changed: it alone is recreated.
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "two", "1s")));
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let second = engine.containers(id);
    for (name, container) in &first {
        if name == &services["web"] {
            assert_ne!(&second[name], container, "web was not recreated");
        } else {
            assert_eq!(&second[name], container, "{name} was recreated");
        }
    }

    // Remove: containers gone, the named volume kept.
    let generation = deploy(&cp, &node, json!({"deployment_id": id, "action": "remove"}));
    wait_status(&cp, &mut agent, id, generation, "removed", APPLY_WAIT);
    assert!(
        engine.containers(id).is_empty(),
        "{:?}",
        engine.containers(id)
    );
    assert_eq!(engine.volumes().len(), 1, "{:?}", engine.volumes());

    assert_secret_never_shown(&cp, &mut agent);
    assert!(
        cp.channel_protocol_errors().is_empty(),
        "{:?}",
        cp.channel_protocol_errors()
    );
    eprintln!(
        "figures: command → running of 3 services with present images: {:.2}s; the same file again, command → running: {:.3}s",
        to_running.as_secs_f64(),
        unchanged.as_secs_f64()
    );
}

#[test]
fn a_restarted_agent_reports_what_runs_and_a_dropped_channel_loses_nothing() {
    let engine = Engine::start("deploy-restart");
    let cp = ControlPlane::start();
    let env = [("DOCKER_HOST", engine.docker_host())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut agent, node) = start_agent_with_channel(&cp, "deploy-restart", &env);
    let port = support::published_port();
    let id = "restart-e2e";
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "one", "3s")));
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let first = engine.containers(id);

    // Killed and started again: the containers run on, and the new agent's hello lists them
    // to a control plane that forgot them.
    drop(agent);
    assert_eq!(engine.running(id), 3);
    cp.forget_deployments();
    let hellos_before = cp
        .channel_messages()
        .iter()
        .filter(|m| m.kind() == Some("hello"))
        .count();
    let (mut agent, node) = start_agent_with_channel(&cp, "deploy-restart", &env);
    let hello = cp
        .channel_messages()
        .into_iter()
        .filter(|m| m.kind() == Some("hello"))
        .nth(hellos_before)
        .expect("the new agent's hello");
    let listed = &hello.json["deployments"];
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["deployment_id"] == id
                && d["generation"] == generation
                && d["status"] == "running"),
        "{listed}"
    );
    assert_eq!(cp.deployment(id).unwrap()["status"], "running");
    assert_eq!(engine.containers(id), first);

    // The channel dropped mid-apply (web's recreation waits its 3 s grace period): the apply
    // finishes, its status comes on the next connection, and the deploy the control plane
    // sends again is not applied twice.
    cp.ignore_acknowledgements(true);
    let connections = cp.channel_connections(&node);
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "two", "3s")));
    let pending = wait_status(&cp, &mut agent, id, generation, "pending", WAIT);
    assert!(pending.is_object());
    assert!(cp.drop_channel(&node));
    let running = |messages: &[control_plane::ChannelMessage]| {
        messages
            .iter()
            .find(|m| {
                m.kind() == Some("status")
                    && m.json["deployment_id"] == id
                    && m.json["generation"] == generation
                    && m.json["status"] == "running"
            })
            .map(|m| m.connection)
    };
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let on = running(&cp.channel_messages()).unwrap();
    assert!(
        cp.channel_connections(&node) > connections,
        "the channel never reconnected"
    );
    let dropped_connection = cp
        .channel_messages()
        .iter()
        .find(|m| m.json["status"] == "pending" && m.json["generation"] == generation)
        .unwrap()
        .connection;
    assert!(
        on > dropped_connection,
        "the final status came before the drop"
    );
    // The deploy the control plane sent again was acknowledged, not applied: one apply.
    agent.expect_line(
        &format!("Deployment {id}: generation {generation} is not newer than {generation}: acknowledged again"),
        WAIT,
    );
    let output = agent.output();
    let applies = output
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "Deployment {id} generation {generation} (apply): "
            ))
        })
        .count();
    assert_eq!(applies, 1, "{output}");
    let second = engine.containers(id);
    assert_eq!(second.len(), 3, "{second:?}");
    let changed = first
        .iter()
        .filter(|(name, c)| second.get(*name) != Some(c))
        .count();
    assert_eq!(changed, 1, "{first:?} → {second:?}");
    assert_secret_never_shown(&cp, &mut agent);
}

/// The names the agent's newest heartbeat lists as running containers.
fn heartbeat_containers(cp: &ControlPlane) -> Vec<String> {
    support::heartbeats(&cp.requests())
        .last()
        .and_then(|r| r.json())
        .and_then(|body| body["running_containers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|name| name.as_str().map(str::to_string))
        .collect()
}

/// Waits for a heartbeat after now whose container list `holds` says yes to.
#[track_caller]
fn wait_heartbeat_containers(
    cp: &ControlPlane,
    agent: &mut Agent,
    what: &str,
    holds: impl Fn(&[String]) -> bool,
) {
    let seen = support::heartbeats(&cp.requests()).len();
    let found = cp.wait_until(Duration::from_secs(30), |requests| {
        let beats = support::heartbeats(requests);
        beats.len() > seen
            && beats[seen..].iter().any(|r| {
                let names: Vec<String> = r.json().unwrap()["running_containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect();
                holds(&names)
            })
    });
    assert!(
        found,
        "no heartbeat {what} within 30 s; the last listed {:?}; the agent said:\n{}",
        heartbeat_containers(cp),
        agent.output()
    );
}

#[test]
fn the_engine_service_restarted_the_containers_run_on_and_the_agent_reports_them() {
    let mut engine = Engine::start("deploy-enginerst");
    let cp = ControlPlane::start();
    let docker_host = engine.docker_host();
    let (mut agent, node) = start_agent_with_channel(
        &cp,
        "deploy-engine-restart",
        &[("DOCKER_HOST", &docker_host), ("HEARTBEAT_INTERVAL", "0.5")],
    );
    let port = support::published_port();
    let id = "engine-restart";
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "one", "1s")));
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    let first = engine.containers(id);
    assert_eq!(first.len(), 3, "{first:?}");
    let all_listed = |names: &[String]| first.keys().all(|name| names.contains(name));
    wait_heartbeat_containers(&cp, &mut agent, "listing the deployment", all_listed);

    // The engine's service stops: its socket answers nothing, the containers run on (conmon
    // keeps them, as dockerd's live-restore or containerd-shim does), and the heartbeats say
    // the engine lists nothing.
    engine.podman.stop_service();
    assert!(
        std::os::unix::net::UnixStream::connect(&engine.socket).is_err(),
        "the engine's socket still answers after its service stopped"
    );
    assert_eq!(
        engine.running(id),
        3,
        "the containers died with the service"
    );
    wait_heartbeat_containers(
        &cp,
        &mut agent,
        "without the deployment's containers",
        |names| !first.keys().any(|name| names.contains(name)),
    );

    // Started again on the same socket: the agent lists them again, reports the deployment
    // running, and the same file again has nothing to do.
    let socket = engine
        .podman
        .start_service()
        .unwrap_or_else(|reason| no_podman(&reason));
    assert_eq!(socket, engine.socket);
    wait_heartbeat_containers(&cp, &mut agent, "listing the deployment again", all_listed);
    assert_eq!(cp.deployment(id).unwrap()["status"], "running");
    let generation = deploy(&cp, &node, apply_body(id, &project(port, "one", "1s")));
    let running = wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    assert_eq!(
        running["services"].as_array().unwrap().len(),
        3,
        "{running}"
    );
    assert_eq!(
        engine.containers(id),
        first,
        "the apply after the engine's restart recreated containers"
    );
    let output = agent.output();
    assert!(
        !output.contains("panicked"),
        "the agent panicked:\n{output}"
    );
    assert!(
        agent.wait_exit(Duration::ZERO).is_none(),
        "the agent exited"
    );
}

/// Asks the agent something it does not know (a message `type` of its own) and waits at most
/// 5 s for its `error` answer: the channel is served, not hung.
#[track_caller]
fn assert_channel_answers(cp: &ControlPlane, agent: &mut Agent, node: &str, probe: &str) {
    let asked = Instant::now();
    assert!(cp.send_to_node(node, &json!({"type": probe})), "no channel");
    let answered = cp.wait_until_channel(Duration::from_secs(5), |messages| {
        messages
            .iter()
            .any(|m| m.kind() == Some("error") && m.json["about"] == probe)
    });
    assert!(
        answered,
        "the channel did not answer {probe} within 5 s; the agent said:\n{}",
        agent.output()
    );
    eprintln!("{probe}: answered in {:?}", asked.elapsed());
}

/// The agent runs on and never panicked.
#[track_caller]
fn assert_alive(agent: &mut Agent) {
    assert!(
        agent.wait_exit(Duration::ZERO).is_none(),
        "the agent exited:\n{}",
        agent.output()
    );
    let output = agent.output();
    assert!(!output.contains("panicked"), "{output}");
}

/// The longest time between two heartbeats that arrived from `from` to `to`, with the last one
/// before and the first one after; and how many arrived in between.
fn longest_heartbeat_gap(cp: &ControlPlane, from: Instant, to: Instant) -> (Duration, usize) {
    let requests = cp.requests();
    let beats: Vec<Instant> = support::heartbeats(&requests)
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.at)
        .collect();
    let first = beats.iter().rposition(|at| *at <= from).unwrap_or(0);
    let last = beats
        .iter()
        .position(|at| *at >= to)
        .unwrap_or(beats.len() - 1);
    let window = &beats[first..=last];
    let longest = window
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or(Duration::MAX);
    (longest, window.len())
}

/// An engine behind a proxy that breaks the requests a test names, and the agent using it.
fn behind_proxy(
    name: &str,
    env: &[(&str, &str)],
) -> (Engine, EngineProxy, ControlPlane, Agent, String) {
    let engine = Engine::start(name);
    let proxy = EngineProxy::start(engine.podman.dir.join("proxy.sock"), engine.socket.clone());
    let cp = ControlPlane::start();
    let docker_host = proxy.docker_host();
    let mut all = vec![("DOCKER_HOST", docker_host.as_str())];
    all.extend_from_slice(env);
    let (agent, node) = start_agent_with_channel(&cp, name, &all);
    (engine, proxy, cp, agent, node)
}

#[test]
fn heartbeats_keep_their_ticks_while_a_pull_stalls_30_s() {
    let (engine, proxy, cp, mut agent, node) =
        behind_proxy("deploy-pullstall", &[("HEARTBEAT_INTERVAL", "1")]);
    // The image is not on the engine: the apply pulls it, and the engine holds the pull 30 s
    // with no byte of progress, then drops it.
    proxy.break_on("/images/create", 0, Fault::Stall(Duration::from_secs(30)));
    let id = "pull-stall";
    let generation = deploy(
        &cp,
        &node,
        apply_body(id, "services:\n  app:\n    image: miaas/stalled:1\n"),
    );
    let (stalled, request) = proxy.wait_hit(WAIT).expect("no pull reached the engine");
    assert!(request.contains("fromImage="), "{request}");
    wait_status(&cp, &mut agent, id, generation, "pulling", WAIT);
    // While the pull hangs the channel is served.
    assert_channel_answers(&cp, &mut agent, &node, "probe-during-pull");
    let failed = wait_status(
        &cp,
        &mut agent,
        id,
        generation,
        "failed",
        Duration::from_secs(60),
    );
    let ended = Instant::now();
    assert!(
        ended - stalled >= Duration::from_secs(29),
        "the pull ended {:?} after it stalled: the stall was not covered",
        ended - stalled
    );
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("miaas/stalled:1"), "{message}");
    // At 1 s, no heartbeat came more than 2 s after the one before while the pull hung.
    let (longest, beats) = longest_heartbeat_gap(&cp, stalled, ended);
    assert!(
        longest <= Duration::from_secs(2) && beats >= 28,
        "while the pull stalled: {beats} heartbeats, the longest gap {longest:?}"
    );
    assert_channel_answers(&cp, &mut agent, &node, "probe-after-pull");
    assert_alive(&mut agent);
    eprintln!(
        "figures: 30 s stalled pull: {beats} heartbeats at 1 s, longest gap {:.3}s; failed after {:.1}s",
        longest.as_secs_f64(),
        (ended - stalled).as_secs_f64()
    );
    drop(engine);
}

#[test]
fn the_engine_vanishing_or_answering_garbage_mid_apply_fails_and_the_next_apply_converges() {
    // No re-detection during the test: it would ask the engine's version for its own reasons.
    let (engine, proxy, cp, mut agent, node) =
        behind_proxy("deploy-faults", &[("REDETECT_INTERVAL", "3600")]);
    let port = support::published_port();
    let id = "faults-e2e";
    let mut versions_asked = None;
    let cases = [
        // The second container's create reaches the engine, its answer does not, and the
        // socket is gone: the next apply finds a container it did not hear of.
        ("vanish", "/containers/create", 1, Fault::Vanish, "one"),
        // web is recreated; the engine starts it and answers garbage.
        ("garbage", "/start", 0, Fault::Garbage, "two"),
        // The apply's own list of the deployment's containers answers garbage.
        (
            "garbage-list",
            "deployment%3Dfaults-e2e",
            0,
            Fault::Garbage,
            "three",
        ),
    ];
    for (case, needle, skip, fault, mode) in cases {
        proxy.break_on(needle, skip, fault);
        let file = project(port, mode, "1s");
        let generation = deploy(&cp, &node, apply_body(id, &file));
        proxy
            .wait_hit(APPLY_WAIT)
            .unwrap_or_else(|| panic!("{case}: no {needle} request reached the engine"));
        let failed = wait_status(&cp, &mut agent, id, generation, "failed", APPLY_WAIT);
        eprintln!("{case}: {}", failed["message"]);
        assert_channel_answers(&cp, &mut agent, &node, &format!("probe-{case}"));
        assert_alive(&mut agent);

        proxy.come_back();
        let generation = deploy(&cp, &node, apply_body(id, &file));
        let running = wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
        assert_eq!(
            running["services"].as_array().unwrap().len(),
            3,
            "{case}: {running}"
        );
        let containers = engine.containers(id);
        assert_eq!(containers.len(), 3, "{case}: {containers:?}");
        assert_eq!(engine.running(id), 3, "{case}");
        versions_asked.get_or_insert(proxy.count("GET /version "));
    }
    // The API version is asked once, not per command or refresh (dockerd runs `runc` to
    // answer it; podman takes up to 0.8 s): the socket that vanished came back under the same
    // path, and the engine behind it is the same.
    assert_eq!(
        proxy.count("GET /version "),
        versions_asked.unwrap(),
        "the engine was asked its version again after the first apply"
    );
    assert_alive(&mut agent);
}

#[test]
fn an_engine_call_that_stalls_times_out_failed_and_the_next_apply_converges() {
    let (engine, proxy, cp, mut agent, node) =
        behind_proxy("deploy-callstall", &[("HEARTBEAT_INTERVAL", "1")]);
    let port = support::published_port();
    let id = "call-stall";
    // Longer than the engine client's 60 s per call: the agent gives up first.
    proxy.break_on(
        "/containers/create",
        0,
        Fault::Stall(Duration::from_secs(90)),
    );
    let file = project(port, "one", "1s");
    let generation = deploy(&cp, &node, apply_body(id, &file));
    let (stalled, _) = proxy
        .wait_hit(APPLY_WAIT)
        .expect("no create reached the engine");
    assert_channel_answers(&cp, &mut agent, &node, "probe-during-stall");
    let failed = wait_status(
        &cp,
        &mut agent,
        id,
        generation,
        "failed",
        Duration::from_secs(80),
    );
    let ended = Instant::now();
    eprintln!(
        "stalled create: {} after {:?}",
        failed["message"],
        ended - stalled
    );
    let (longest, beats) = longest_heartbeat_gap(&cp, stalled, ended);
    assert!(
        longest <= Duration::from_secs(2),
        "while the engine stalled: {beats} heartbeats, the longest gap {longest:?}"
    );
    assert_alive(&mut agent);
    proxy.come_back();
    let generation = deploy(&cp, &node, apply_body(id, &file));
    wait_status(&cp, &mut agent, id, generation, "running", APPLY_WAIT);
    assert_eq!(engine.running(id), 3);
}

/// The agent's peak resident memory, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_deploys_collapses_to_the_newest_in_bounded_memory() {
    let engine = Engine::start("deploy-flood");
    let cp = ControlPlane::start();
    let (mut agent, node) = start_agent_with_channel(
        &cp,
        "deploy-flood",
        &[
            ("DOCKER_HOST", &engine.docker_host()),
            ("LOG_LEVEL", "info"),
        ],
    );
    let id = "flood-e2e";
    let port = support::published_port();
    let file = |generation: u64| {
        // 64 KiB each: a thousand held at once would be 64 MiB.
        format!(
            "x-padding: \"{}\"\n{}",
            "p".repeat(64 * 1024),
            project(port, &format!("m{generation}"), "1s")
        )
    };
    let message = |generation: u64| {
        let mut body = apply_body(id, &file(generation));
        body["type"] = json!("deploy");
        body["generation"] = json!(generation);
        body
    };
    assert!(cp.send_to_node(&node, &message(1)));
    wait_status(&cp, &mut agent, id, 1, "running", APPLY_WAIT);
    let before = vm_hwm_kib(agent.pid());
    let began = Instant::now();
    for generation in 2..=1001 {
        assert!(cp.send_to_node(&node, &message(generation)));
    }
    wait_status(&cp, &mut agent, id, 1001, "running", APPLY_WAIT);
    let after = vm_hwm_kib(agent.pid());
    let output = agent.output();
    let applies = output
        .lines()
        .filter(|l| l.contains(&format!("Deployment {id} generation ")))
        .count();
    assert!(
        applies <= 10,
        "{applies} applies ran for a flood of 1000:\n{output}"
    );
    assert!(
        after - before < 8 * 1024,
        "VmHWM grew from {before} KiB to {after} KiB"
    );
    assert!(
        cp.channel_protocol_errors().is_empty(),
        "{:?}",
        cp.channel_protocol_errors()
    );
    eprintln!(
        "figures: flood of 1000 deploys of 64 KiB: {applies} applies, newest running after {:.1}s, VmHWM {before} → {after} KiB",
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn a_deploy_body_over_1_mib_is_refused_in_bounded_memory() {
    let cp = ControlPlane::start();
    let dir = std::env::temp_dir().join(format!("miaas-deploy-big-{}", std::process::id()));
    let missing = format!("unix://{}/engine.sock", dir.display());
    let (mut agent, node) = start_agent_with_channel(
        &cp,
        "deploy-big",
        &[("DOCKER_HOST", &missing), ("LOG_LEVEL", "info")],
    );
    // A file of exactly `size` bytes: a padding key, then one service.
    let file = |size: usize| {
        let service = "\nservices:\n  a:\n    image: redis:7\n";
        let padding = size - service.len() - "x-padding: \"\"".len();
        let text = format!("x-padding: \"{}\"{service}", "p".repeat(padding));
        assert_eq!(text.len(), size);
        text
    };
    let message = |id: &str, generation: u64, size: usize| {
        let mut body = apply_body(id, &file(size));
        body["type"] = json!("deploy");
        body["generation"] = json!(generation);
        body
    };
    let refusals = |messages: &[control_plane::ChannelMessage]| {
        messages
            .iter()
            .filter(|m| {
                m.kind() == Some("error")
                    && m.json["about"] == "deploy"
                    && m.json["message"] == "rendered_compose: larger than 1 MiB"
            })
            .count()
    };
    let before = vm_hwm_kib(agent.pid());

    // One byte over 1 MiB (the frame 1.5 MiB, under the channel's 2 MiB): refused, said on
    // the channel and in the log; no status, nothing run.
    assert!(cp.send_to_node(&node, &message("big", 1, (1 << 20) + 1)));
    assert!(
        cp.wait_until_channel(WAIT, |messages| refusals(messages) == 1),
        "no refusal; the agent said:\n{}",
        agent.output()
    );
    agent.expect_line(
        "WARN  Node channel: refused a deploy message: rendered_compose: larger than 1 MiB",
        WAIT,
    );
    // 1.5 MiB each: the first sets the peak, twenty more do not raise it.
    assert!(cp.send_to_node(&node, &message("big", 2, 3 << 19)));
    assert!(
        cp.wait_until_channel(WAIT, |messages| refusals(messages) == 2),
        "no second refusal; the agent said:\n{}",
        agent.output()
    );
    let once = vm_hwm_kib(agent.pid());
    for generation in 3..=22 {
        assert!(cp.send_to_node(&node, &message("big", generation, 3 << 19)));
    }
    assert!(
        cp.wait_until_channel(APPLY_WAIT, |messages| refusals(messages) == 22),
        "not 22 refusals; the agent said:\n{}",
        agent.output()
    );
    let after = vm_hwm_kib(agent.pid());
    assert!(
        !cp.channel_messages()
            .iter()
            .any(|m| m.kind() == Some("status") && m.json["deployment_id"] == "big"),
        "a refused deploy got a status"
    );
    assert!(
        once - before < 8 * 1024 && after - once < 512,
        "VmHWM {before} KiB, after a 1.5 MiB refusal {once} KiB, after 20 more {after} KiB"
    );

    // Exactly 1 MiB is taken (and fails here for want of an engine), on the same channel.
    assert!(cp.send_to_node(&node, &message("at-limit", 1, 1 << 20)));
    let failed = wait_status(&cp, &mut agent, "at-limit", 1, "failed", WAIT);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("no container engine socket found at "),
        "{failed}"
    );
    assert_alive(&mut agent);
    assert_eq!(cp.channel_connections(&node), 1, "the channel was dropped");
    eprintln!(
        "figures: deploy bodies over 1 MiB: VmHWM {before} KiB before, {once} KiB after one of 1.5 MiB, {after} KiB after 20 more"
    );
}

#[test]
fn what_the_agent_cannot_do_is_said_on_the_channel() {
    let cp = ControlPlane::start();
    let dir = std::env::temp_dir().join(format!("miaas-deploy-noengine-{}", std::process::id()));
    let missing = format!("unix://{}/engine.sock", dir.display());
    let (mut agent, node) =
        start_agent_with_channel(&cp, "deploy-noengine", &[("DOCKER_HOST", &missing)]);
    // Registered with what it can do.
    let registration = registrations(&cp.requests())[0].json().unwrap();
    assert_eq!(
        registration["capabilities"]["deployments"],
        json!({"enabled": true, "engine": false})
    );
    // A deploy with no engine.
    let generation = deploy(
        &cp,
        &node,
        apply_body("noengine", "services:\n  a:\n    image: redis:7\n"),
    );
    let failed = wait_status(&cp, &mut agent, "noengine", generation, "failed", WAIT);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("no container engine socket found at "),
        "{failed}"
    );
    // An unknown message type, and a log stream with no engine to read.
    assert!(cp.send_to_node(&node, &json!({"type": "reboot", "now": true})));
    assert!(cp.send_to_node(
        &node,
        &json!({"type": "logs", "stream_id": "v-1", "deployment_id": "noengine"})
    ));
    assert!(
        cp.wait_until_channel(WAIT, |messages| {
            messages
                .iter()
                .any(|m| m.kind() == Some("error") && m.json["about"] == "reboot")
                && messages.iter().any(|m| {
                    m.kind() == Some("log_end")
                        && m.json["stream_id"] == "v-1"
                        && m.json["reason"] == "error"
                        && m.json["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("no container engine socket found"))
                })
        }),
        "{:?}",
        cp.channel_messages()
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
    );
    assert_secret_never_shown(&cp, &mut agent);
}

#[test]
fn without_a_channel_one_info_line_and_heartbeats_as_before() {
    let cp = ControlPlane::start_without_channel();
    let mut agent = Agent::start(&cp.url(), &[("NODE_NAME", "deploy-nochannel")]);
    agent.expect_line("Deployments: on", WAIT);
    agent.expect_line(
        "The control plane has no node channel (HTTP 404 while it accepts heartbeats)",
        WAIT,
    );
    let seen = count_heartbeats(&cp.requests(), 200);
    assert!(
        cp.wait_until(WAIT, |requests| count_heartbeats(requests, 200)
            >= seen + 10)
    );
    let output = agent.output();
    assert_eq!(output.matches("no node channel").count(), 1, "{output}");
    let loud = output
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains("hannel"))
        .count();
    assert_eq!(loud, 0, "{output}");
    // Heartbeats on their 0.2 s ticks, as without deployments.
    let beats: Vec<Instant> = support::heartbeats(&cp.requests())
        .iter()
        .map(|r| r.at)
        .collect();
    for pair in beats.windows(2).skip(1) {
        let gap = pair[1] - pair[0];
        assert!(
            gap < Duration::from_millis(600),
            "a heartbeat {gap:?} after the one before"
        );
    }
}

/// A local address that is not loopback, to reach the control plane by.
fn non_loopback_address() -> Option<String> {
    let output = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "up"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .find(|ip| !ip.starts_with("127."))
        .map(str::to_string)
}

#[test]
fn over_plain_http_to_another_host_deployments_stay_off_unless_allowed() {
    let Some(address) = non_loopback_address() else {
        skip("no non-loopback IPv4 address on this machine to reach the control plane by");
        return;
    };
    let cp = ControlPlane::start_on(format!("{address}:0")).unwrap();
    let url = format!("http://{}", cp.addr());
    let mut agent = Agent::start(&url, &[("NODE_NAME", "deploy-plain")]);
    agent.expect_line("Deployments: off: CONTROL_PLANE_URL is plain http://", WAIT);
    assert!(cp.wait_until(WAIT, |requests| count_heartbeats(requests, 200) >= 5));
    assert!(
        !cp.requests().iter().any(|r| r.is_channel()),
        "the channel was dialed over plain http"
    );
    let registration = registrations(&cp.requests())[0].json().unwrap();
    assert_eq!(
        registration["capabilities"]["deployments"]["enabled"],
        false
    );
    drop(agent);

    let mut agent = Agent::start(
        &url,
        &[
            ("NODE_NAME", "deploy-plain"),
            ("ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP", "yes"),
        ],
    );
    agent.expect_line("Deployments: on over plain http://", WAIT);
    agent.expect_line("Node channel open", WAIT);
}
