//! Applying compose projects on a real engine: podman's Docker-compatible service on a private
//! socket with its own storage, and a local `FROM scratch` busybox image tagged under the full
//! names the files use (no registry is reachable here). What `docker compose up -d
//! --remove-orphans` and `down` do, checked on the engine's own objects.
#![cfg(feature = "deploy")]

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use async_io::{Timer, block_on};
use futures_lite::future;
use miaas_agent::control_plane::channel::messages::{
    DeploymentStatus, RegistryCredential, Secret, State,
};
use miaas_agent::deploy::compose::ComposeProject;
use miaas_agent::deploy::{
    ApplyRequest, DEPLOYMENT_LABEL, NodePolicy, apply, observe, observe_all, remove,
};
use miaas_agent::engine::EngineClient;
use support::engine_proxy::{EngineProxy, Fault};
use support::podman::{Podman, text};

const DB_IMAGE: &str = "docker.io/library/postgres:16";
const WEB_IMAGE: &str = "docker.io/library/nginx:1";

/// Two services: `db` with a named volume, a bind mount, an interpolated environment and an
/// inline config, writing what it sees into the bind mount; `web` after it, with a port.
const FILE: &str = r#"
services:
  db:
    image: postgres:16
    command:
      - /busybox
      - sh
      - -c
      - cat /etc/app/app.conf > /host/config-seen; echo "$$GREETING" > /host/greeting; date > /data/marker; exec /busybox sleep 3600
    environment:
      GREETING: ${GREETING}
    volumes:
      - data:/data
      - ${HOST_DIR}:/host
    configs:
      - source: app
        target: /etc/app/app.conf
        mode: 0440
  web:
    image: nginx:1
    depends_on: [db]
    ports: ["127.0.0.1:18081:80"]
    command: [/busybox, httpd, -f, -p, "80"]
    environment:
      MODE: one
volumes:
  data:
configs:
  app:
    content: |
      password=${PASSWORD}
"#;

#[track_caller]
fn no_podman(reason: &str) -> ! {
    panic!(
        "\n\n*** podman cannot serve its API on this machine, so applying deployments was not \
         tested against a real engine ***\n{reason}\n(scripts/setup.sh installs podman, runc and \
         busybox-static; the test needs root)\n"
    );
}

fn within<T>(seconds: u64, what: &str, future: impl Future<Output = T>) -> T {
    block_on(future::or(future, async {
        Timer::after(Duration::from_secs(seconds)).await;
        panic!("{what}: nothing within {seconds} s");
    }))
}

/// Debian's Docker daemon on a private socket, for what podman does not do here; a machine
/// without it fails the test loudly, naming what was not tested.
#[track_caller]
fn dockerd(name: &str, untested: &str) -> support::dockerd::Dockerd {
    support::dockerd::Dockerd::start(name).unwrap_or_else(|reason| {
        panic!(
            "\n\n*** dockerd cannot run on this machine, so {untested} not tested against a real \
             engine ***\n{reason}\n(scripts/setup.sh installs docker.io; the test needs root)\n"
        )
    })
}

struct Setup {
    podman: Podman,
    engine: EngineClient,
    host_dir: std::path::PathBuf,
}

fn setup(name: &str) -> Setup {
    let mut podman = Podman::new(name);
    let version = podman.output(&["version"]);
    if !version.status.success() {
        no_podman(&text(&version));
    }
    podman
        .build_busybox_image(DB_IMAGE)
        .unwrap_or_else(|reason| no_podman(&reason));
    let tagged = podman.output(&["tag", DB_IMAGE, WEB_IMAGE]);
    assert!(tagged.status.success(), "{}", text(&tagged));
    let socket = podman
        .start_service()
        .unwrap_or_else(|reason| no_podman(&reason));
    let host_dir = podman.dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    Setup {
        engine: EngineClient::new(socket),
        podman,
        host_dir,
    }
}

fn env(host_dir: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("GREETING".to_string(), "hello from env".to_string()),
        ("PASSWORD".to_string(), "pw-7781".to_string()),
        ("HOST_DIR".to_string(), host_dir.display().to_string()),
    ])
}

fn load(text: &str, host_dir: &Path, id: &str) -> ComposeProject {
    ComposeProject::load(text, &env(host_dir), id).unwrap()
}

/// Applies and returns the final status with every intermediate one.
fn run(
    engine: &EngineClient,
    id: &str,
    generation: u64,
    project: &ComposeProject,
    policy: &NodePolicy,
) -> (DeploymentStatus, Vec<DeploymentStatus>) {
    run_with_auth(engine, id, generation, project, policy, &BTreeMap::new())
}

/// `run`, with the deploy's registry credentials.
fn run_with_auth(
    engine: &EngineClient,
    id: &str,
    generation: u64,
    project: &ComposeProject,
    policy: &NodePolicy,
    auth: &BTreeMap<String, RegistryCredential>,
) -> (DeploymentStatus, Vec<DeploymentStatus>) {
    let mut reports = Vec::new();
    let request = ApplyRequest {
        deployment_id: id,
        generation,
        project,
        registry_auth: auth,
    };
    let status = within(
        180,
        "apply",
        apply(engine, &request, policy, &mut |s| reports.push(s)),
    );
    (status, reports)
}

/// Container name → id of the deployment's containers.
fn containers(engine: &EngineClient, id: &str) -> BTreeMap<String, String> {
    let filter = format!("{DEPLOYMENT_LABEL}={id}");
    block_on(engine.containers(&[&filter]))
        .unwrap()
        .into_iter()
        .map(|c| (c.names[0].clone(), c.id))
        .collect()
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn podman_lines(podman: &Podman, args: &[&str]) -> Vec<String> {
    let output = podman.output(args);
    assert!(output.status.success(), "{}", text(&output));
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_project_is_applied_converged_and_removed_as_compose_does() {
    let Setup {
        podman,
        engine,
        host_dir,
    } = setup("deploy-apply");
    let id = "shop";
    let project = load(FILE, &host_dir, id);

    // Applied: both services run, in order, with the file's configs, env, mounts and port.
    let (status, reports) = run(&engine, id, 1, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(status.message, "2 services running");
    let states: Vec<(&str, &str, &str)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.container.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("db", "shop-db-1", "running"),
            ("web", "shop-web-1", "running")
        ]
    );
    assert!(
        reports.iter().any(|r| r.status == State::Starting),
        "{reports:?}"
    );
    // Images present are used as they are: nothing pulled.
    assert!(
        !reports.iter().any(|r| r.status == State::Pulling),
        "{reports:?}"
    );
    assert_eq!(
        wait_for_file(&host_dir.join("config-seen")),
        "password=pw-7781\n"
    );
    assert_eq!(
        wait_for_file(&host_dir.join("greeting")),
        "hello from env\n"
    );
    let mode = podman_lines(
        &podman,
        &[
            "inspect",
            "--format",
            "{{json .HostConfig.PortBindings}}",
            "shop-web-1",
        ],
    );
    assert!(
        mode[0].contains(r#""80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18081"}]"#),
        "{mode:?}"
    );
    // Compose's labels: `podman ps` (and `docker compose ps`) see a compose project.
    assert_eq!(
        podman_lines(
            &podman,
            &[
                "ps",
                "--filter",
                "label=com.docker.compose.project=shop",
                "--format",
                "{{.Names}} {{index .Labels \"com.docker.compose.service\"}} {{index .Labels \"com.docker.compose.container-number\"}} {{index .Labels \"com.docker.compose.oneoff\"}} {{index .Labels \"io.miaas.generation\"}}"
            ]
        ),
        ["shop-db-1 db 1 False 1", "shop-web-1 web 1 False 1"]
    );
    assert_eq!(
        podman_lines(
            &podman,
            &[
                "volume",
                "ls",
                "--filter",
                "label=com.docker.compose.volume=data",
                "--format",
                "{{.Name}}"
            ]
        ),
        ["shop_data"]
    );
    // (podman's CLI keeps networks elsewhere than the test's service: asked through the API.)
    let networks = block_on(engine.networks(&["com.docker.compose.project=shop"])).unwrap();
    let network = &networks[..];
    assert_eq!(
        network.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["shop_default"]
    );
    assert_eq!(network[0].labels["com.docker.compose.network"], "default");
    assert_eq!(network[0].labels[DEPLOYMENT_LABEL], "shop");
    let first = containers(&engine, id);
    assert_eq!(first.len(), 2);

    // Applied again: nothing recreated.
    let (status, _) = run(&engine, id, 2, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(containers(&engine, id), first);

    // One service's environment changed: that one alone is recreated.
    let changed = load(&FILE.replace("MODE: one", "MODE: two"), &host_dir, id);
    let (status, _) = run(&engine, id, 3, &changed, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    let after = containers(&engine, id);
    assert_eq!(after["shop-db-1"], first["shop-db-1"]);
    assert_ne!(after["shop-web-1"], first["shop-web-1"]);

    // observe_all finds it, with the newest generation among its containers.
    let all = within(30, "observe_all", observe_all(&engine));
    let all = all.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (
            all[0].deployment_id.as_str(),
            all[0].generation,
            all[0].status
        ),
        ("shop", 3, State::Running)
    );

    // A service gone from the file: its container is removed (an orphan).
    let without_web = format!(
        "{}{}",
        &FILE[..FILE.find("  web:").unwrap()],
        &FILE[FILE.find("volumes:\n  data:").unwrap()..]
    );
    let without_web = load(&without_web, &host_dir, id);
    assert_eq!(without_web.services.len(), 1);
    let (status, _) = run(&engine, id, 4, &without_web, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    let remaining = containers(&engine, id);
    assert_eq!(
        remaining.keys().collect::<Vec<_>>(),
        ["shop-db-1"],
        "{remaining:?}"
    );
    assert_eq!(remaining["shop-db-1"], first["shop-db-1"]);

    // Removed: containers and networks gone, the named volume kept.
    let mut reports = Vec::new();
    let status = within(
        60,
        "remove",
        remove(&engine, id, 5, &mut |s| reports.push(s)),
    );
    assert_eq!(status.status, State::Removed, "{status:?}");
    assert_eq!(reports[0].status, State::Removing);
    assert!(containers(&engine, id).is_empty());
    let filter = format!("{DEPLOYMENT_LABEL}={id}");
    assert!(block_on(engine.networks(&[&filter])).unwrap().is_empty());
    let volumes = block_on(engine.volumes(&[&filter])).unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["shop_data"]
    );
    let observed = within(30, "observe", observe(&engine, id, 5)).unwrap();
    assert_eq!(observed.status, State::Failed);
    assert!(observed.services.is_empty());
}

#[test]
fn refusals_unknown_images_and_foreign_names_fail_and_touch_nothing() {
    let Setup {
        podman,
        engine,
        host_dir,
    } = setup("deploy-refusals");
    // The other test runs at the same time and publishes 18081.
    let file = FILE.replace("18081", "18082");
    let no_object_of = |id: &str| {
        let filter = format!("{DEPLOYMENT_LABEL}={id}");
        assert!(containers(&engine, id).is_empty());
        assert!(block_on(engine.networks(&[&filter])).unwrap().is_empty());
        assert!(block_on(engine.volumes(&[&filter])).unwrap().is_empty());
    };

    // The node's policy refuses: failed naming the rule, nothing created.
    let privileged = load(
        &file.replace(
            "    depends_on: [db]\n",
            "    depends_on: [db]\n    privileged: true\n",
        ),
        &host_dir,
        "refused",
    );
    let policy = NodePolicy {
        refuse_privileged: true,
        ..NodePolicy::default()
    };
    let (status, _) = run(&engine, "refused", 1, &privileged, &policy);
    assert_eq!(status.status, State::Failed);
    assert!(
        status
            .message
            .starts_with("refused: service \"web\": `privileged: true` is refused by this node's policy (refuse_privileged)"),
        "{}",
        status.message
    );
    no_object_of("refused");

    // An image that cannot be pulled (nothing listens on port 9): failed naming it, nothing
    // created.
    let absent = load(
        &file.replace("image: nginx:1", "image: 127.0.0.1:9/miaas/absent:1"),
        &host_dir,
        "absent",
    );
    let (status, reports) = run(&engine, "absent", 1, &absent, &NodePolicy::default());
    assert_eq!(status.status, State::Failed);
    assert!(
        status
            .message
            .starts_with("the image 127.0.0.1:9/miaas/absent:1 cannot be pulled: "),
        "{}",
        status.message
    );
    let pulling = reports
        .iter()
        .find(|r| r.status == State::Pulling)
        .expect("a pulling status");
    assert_eq!(
        pulling.progress.as_ref().unwrap().image,
        "127.0.0.1:9/miaas/absent:1"
    );
    no_object_of("absent");

    // A container of the same name that the deployment does not own: failed naming it, and
    // it is left as it was.
    let made = podman.output(&[
        "create",
        "--name",
        "squat-web-1",
        WEB_IMAGE,
        "/busybox",
        "true",
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let squatter = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let project = load(&file, &host_dir, "squat");
    let (status, _) = run(&engine, "squat", 1, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Failed, "{status:?}");
    assert!(
        status.message.starts_with(
            "service web: the container name squat-web-1 is taken by a container that does not belong to this deployment"
        ),
        "{}",
        status.message
    );
    // What already ran keeps running.
    assert_eq!(
        status
            .services
            .iter()
            .map(|s| (s.container.as_str(), s.state.as_str()))
            .collect::<Vec<_>>(),
        [("squat-db-1", "running")]
    );
    let still = podman_lines(
        &podman,
        &[
            "inspect",
            "--format",
            "{{.Id}} {{.State.Status}}",
            "squat-web-1",
        ],
    );
    assert_eq!(still, [format!("{squatter} created")]);
    // Once the name is free, the next apply converges.
    let gone = podman.output(&["rm", "squat-web-1"]);
    assert!(gone.status.success(), "{}", text(&gone));
    let (status, _) = run(&engine, "squat", 2, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    let status = within(60, "remove", remove(&engine, "squat", 3, &mut |_| {}));
    assert_eq!(status.status, State::Removed, "{status:?}");
}

/// `db` becomes healthy only after a while, `migrate` runs once; `web` waits for both, as
/// compose's `service_healthy` and `service_completed_successfully` make it.
const ORDERED: &str = r#"
services:
  db:
    image: postgres:16
    command: [/busybox, sh, -c, "/busybox sleep 2; /busybox touch /host/ready; exec /busybox sleep 3600"]
    healthcheck:
      test: [CMD, /busybox, test, -f, /host/ready]
      interval: 300ms
      retries: 100
    volumes: ["${HOST_DIR}:/host"]
  migrate:
    image: postgres:16
    command: [/busybox, sh, -c, "/busybox sleep 1; echo done > /host/migrated"]
    volumes: ["${HOST_DIR}:/host"]
  web:
    image: postgres:16
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
    command: [/busybox, sh, -c, "if /busybox test -f /host/ready -a -f /host/migrated; then echo ordered > /host/web; else echo early > /host/web; fi; exec /busybox sleep 3600"]
    volumes: ["${HOST_DIR}:/host"]
"#;

/// podman runs no health checks here (it needs systemd), Debian's Docker daemon does.
#[test]
fn dependencies_wait_for_health_and_completion_on_docker() {
    let dockerd = dockerd("deploy-health", "health-check ordering was");
    dockerd.import_busybox(DB_IMAGE).unwrap();
    let engine = EngineClient::new(dockerd.socket());
    let host_dir = dockerd.dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let project = load(ORDERED, &host_dir, "ordered");
    let (status, reports) = run(&engine, "ordered", 1, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    let messages: Vec<&str> = reports.iter().map(|r| r.message.as_str()).collect();
    assert!(
        messages.contains(&"waiting for db to be healthy before starting web")
            && messages.contains(&"waiting for migrate to complete before starting web"),
        "{messages:?}"
    );
    assert_eq!(wait_for_file(&host_dir.join("web")), "ordered\n");
    let states: Vec<(&str, &str, Option<&str>)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.state.as_str(), s.health.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            ("db", "running", Some("healthy")),
            ("migrate", "exited", None),
            ("web", "running", None)
        ]
    );
    let status = within(60, "remove", remove(&engine, "ordered", 2, &mut |_| {}));
    assert_eq!(status.status, State::Removed, "{status:?}");
}

/// Services that need nothing of each other are started side by side, as compose starts them;
/// the one that depends on both waits for both. The first start is held unanswered, and the
/// other one must reach the engine meanwhile.
#[test]
fn independent_services_start_side_by_side_and_their_dependent_after_both() {
    let Setup {
        podman,
        engine,
        host_dir,
    } = setup("apply-waves");
    let proxy = EngineProxy::start(podman.dir.join("proxy.sock"), engine.socket().into());
    let engine = EngineClient::new(&proxy.socket);
    let id = "waves";
    let file = "services:\n  a:\n    image: postgres:16\n    command: [/busybox, sleep, '3600']\n  b:\n    image: postgres:16\n    command: [/busybox, sleep, '3600']\n  c:\n    image: nginx:1\n    command: [/busybox, sleep, '3600']\n    depends_on: [a, b]\n";
    let project = load(file, &host_dir, id);
    // Held 5 s, then closed: the engine never sees that start, and the apply fails.
    proxy.break_on("/start", 0, Fault::Stall(Duration::from_secs(5)));
    let (status, _) = std::thread::scope(|scope| {
        let applying = scope.spawn(|| run(&engine, id, 1, &project, &NodePolicy::default()));
        let (held, request) = proxy
            .wait_hit(Duration::from_secs(60))
            .expect("no start reached the engine");
        while proxy.count("/start") < 2 {
            assert!(
                held.elapsed() < Duration::from_secs(3),
                "while {request} was held, the other independent service was not started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        applying.join().unwrap()
    });
    assert_eq!(status.status, State::Failed, "{status:?}");
    assert!(
        status.message.starts_with("service a:") || status.message.starts_with("service b:"),
        "{}",
        status.message
    );
    // c needs both: nothing of it was created or started.
    assert_eq!(proxy.count("/start"), 2);
    let names: Vec<String> = containers(&engine, id).into_keys().collect();
    assert_eq!(names, ["waves-a-1", "waves-b-1"], "{names:?}");

    // The next apply converges: the one that was not started starts, then c.
    let (status, _) = run(&engine, id, 2, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(containers(&engine, id).len(), 3);
    let removed = within(60, "remove", remove(&engine, id, 3, &mut |_| {}));
    assert_eq!(removed.status, State::Removed, "{removed:?}");
}

/// What the container sees of its own confinement, written into the bind mount.
const HARDENED: &str = r#"
services:
  edge:
    image: postgres:16
    command:
      - /busybox
      - sh
      - -c
      - |
        cd /host
        if /busybox touch /root-write 2>/dev/null; then echo writable; else echo read-only; fi > root
        /busybox touch /tmp/x && /busybox grep ' /tmp ' /proc/mounts > tmp
        /busybox cat /proc/1/cmdline | /busybox tr '\0' ' ' > pid1
        /busybox cat /etc/resolv.conf > dns
        /busybox cat /proc/sys/net/core/somaxconn > somaxconn
        /busybox grep NoNewPrivs /proc/self/status > nnp
        /busybox id -G > groups
        /busybox grep Cpus_allowed_list /proc/self/status > cpus
        echo to the log
        echo done > done
        exec /busybox sleep 3600
    volumes:
      - ${HOST_DIR}:/host
    read_only: true
    init: true
    tmpfs: ["/tmp:size=8m"]
    dns: 192.0.2.53
    sysctls:
      net.core.somaxconn: 1024
    security_opt: ["no-new-privileges:true"]
    group_add: ["1234"]
    cpuset: "0"
    cpu_shares: 512
    pids_limit: 64
    mem_reservation: 32m
    dns_search: edge.local
    logging:
      driver: json-file
      options: {max-size: 1m, max-file: "2"}
"#;

/// Applies `HARDENED` and checks what its container sees and what the engine keeps of its log
/// settings (through the engine's CLI, `cli`), then that a logging change recreates it.
fn hardened_on(
    engine: &EngineClient,
    host_dir: &Path,
    cli: &dyn Fn(&[&str]) -> std::process::Output,
) {
    let id = "hardened";
    let project = load(HARDENED, host_dir, id);
    let (status, _) = run(engine, id, 1, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    wait_for_file(&host_dir.join("done"));
    let seen = |name: &str| std::fs::read_to_string(host_dir.join(name)).unwrap();
    assert_eq!(seen("root"), "read-only\n");
    assert!(
        seen("tmp").starts_with("tmpfs /tmp tmpfs "),
        "{}",
        seen("tmp")
    );
    assert!(seen("tmp").contains("size=8192k"), "{}", seen("tmp"));
    // An init is PID 1 and runs the command as its child.
    assert!(!seen("pid1").starts_with("/busybox"), "{}", seen("pid1"));
    // podman writes the server into resolv.conf; Docker, on a user network, its embedded DNS,
    // which forwards to the server (the inspect below).
    assert!(
        seen("dns").contains("nameserver 192.0.2.53\n")
            || seen("dns").contains("nameserver 127.0.0.11\n"),
        "{}",
        seen("dns")
    );
    assert_eq!(seen("somaxconn"), "1024\n");
    assert_eq!(
        seen("nnp").split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    assert!(seen("dns").contains("search edge.local"), "{}", seen("dns"));
    assert!(
        seen("groups").split_whitespace().any(|g| g == "1234"),
        "{}",
        seen("groups")
    );
    assert_eq!(
        seen("cpus").split_whitespace().collect::<Vec<_>>(),
        ["Cpus_allowed_list:", "0"]
    );
    let inspected = cli(&[
        "inspect",
        "--format",
        "{{.HostConfig.PidsLimit}} {{.HostConfig.MemoryReservation}} {{.HostConfig.CpuShares}} \
         {{json .HostConfig.Dns}} {{json .HostConfig.LogConfig}}",
        "hardened-edge-1",
    ]);
    assert!(inspected.status.success(), "{}", text(&inspected));
    let inspected = String::from_utf8_lossy(&inspected.stdout).into_owned();
    let (limits, log_config) = inspected.split_at(inspected.find(" {").unwrap());
    assert_eq!(limits, r#"64 33554432 512 ["192.0.2.53"]"#);
    // Docker keeps the options as sent; podman keeps the size it took from them.
    assert!(
        log_config.contains(r#""max-size":"1m""#) || log_config.contains(r#""Size":"1MB""#),
        "{log_config}"
    );
    let logs = cli(&["logs", "hardened-edge-1"]);
    assert!(text(&logs).contains("to the log"), "{}", text(&logs));

    // Unchanged: nothing to do. Changed logging: recreated, as compose does.
    let before = containers(engine, id);
    let (status, _) = run(engine, id, 2, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(containers(engine, id), before);
    let changed = load(
        &HARDENED.replace("max-size: 1m", "max-size: 2m"),
        host_dir,
        id,
    );
    let (status, _) = run(engine, id, 3, &changed, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_ne!(
        containers(engine, id),
        before,
        "a logging change did not recreate"
    );
    let removed = within(60, "remove", remove(engine, id, 4, &mut |_| {}));
    assert_eq!(removed.status, State::Removed, "{removed:?}");
}

#[test]
fn confinement_logging_scheduling_and_dns_reach_the_container() {
    let Setup {
        podman,
        engine,
        host_dir,
    } = setup("apply-hardened");
    hardened_on(&engine, &host_dir, &|args| podman.output(args));
}

#[test]
fn confinement_logging_scheduling_and_dns_reach_the_container_on_docker() {
    let dockerd = dockerd("deploy-hardened", "the hardened service was");
    dockerd.import_busybox(DB_IMAGE).unwrap();
    let engine = EngineClient::new(dockerd.socket());
    let host_dir = dockerd.dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host = format!("unix://{}", dockerd.socket().display());
    hardened_on(&engine, &host_dir, &|args| {
        std::process::Command::new("docker")
            .args(["-H", &host])
            .args(args)
            .output()
            .unwrap()
    });
}

/// Pulls from a real registry on loopback, through Docker: `missing` pulls an absent image
/// once; `always` pulls at each apply, and a new image pushed under the same name recreates the
/// service (the way an edge fleet rolls out `:latest`); `never` fails when the node lacks it.
#[test]
fn pull_policy_pulls_from_a_registry_as_compose_does() {
    let dockerd = dockerd("deploy-pull", "pulls were");
    let registry = support::registry::Registry::start("deploy-pull").unwrap_or_else(|reason| {
        panic!(
            "\n\n*** no registry on this machine, so pulls were not tested ***\n{reason}\n\
             (scripts/setup.sh installs docker-registry)\n"
        )
    });
    let docker = |args: &[&str]| {
        let output = dockerd.cli(args).unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let image = format!("{}/edge/app:latest", registry.host);
    // v1 in the registry only.
    dockerd.import_busybox(&image).unwrap();
    let v1 = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);

    let engine = EngineClient::new(dockerd.socket());
    let host_dir = dockerd.dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let file = |policy: &str| {
        format!(
            "services:\n  app:\n    image: {image}\n    pull_policy: {policy}\n    command: [/busybox, sleep, '3600']\n"
        )
    };
    let id = "pulled";
    let image_of = |engine: &EngineClient| {
        block_on(engine.image_inspect(&image))
            .unwrap()
            .map(|i| i.id)
    };

    let (status, reports) = run(
        &engine,
        id,
        1,
        &load(&file("missing"), &host_dir, id),
        &NodePolicy::default(),
    );
    assert_eq!(status.status, State::Running, "{status:?}");
    assert!(
        reports
            .iter()
            .any(|r| r.message == format!("pulling {image}")),
        "{:?}",
        reports.iter().map(|r| &r.message).collect::<Vec<_>>()
    );
    assert_eq!(image_of(&engine).as_deref(), Some(v1.as_str()));
    let first = containers(&engine, id);

    // v2 pushed under the same name; the node still has v1.
    let archive = dockerd.dir.join("busybox.tar");
    docker(&[
        "import",
        "--change",
        "ENV VERSION=2",
        archive.to_str().unwrap(),
        &image,
    ]);
    let v2 = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    assert_ne!(v1, v2);
    docker(&["push", &image]);
    docker(&["tag", &v1, &image]);

    // `missing`: the node has it, nothing is pulled or recreated.
    let (status, reports) = run(
        &engine,
        id,
        2,
        &load(&file("missing"), &host_dir, id),
        &NodePolicy::default(),
    );
    assert_eq!(status.status, State::Running, "{status:?}");
    assert!(reports.iter().all(|r| !r.message.starts_with("pulling")));
    assert_eq!(containers(&engine, id), first);
    // `always`: pulled, and the new image recreates the container (the policy itself is not
    // part of the config hash).
    let (status, _) = run(
        &engine,
        id,
        3,
        &load(&file("always"), &host_dir, id),
        &NodePolicy::default(),
    );
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(image_of(&engine).as_deref(), Some(v2.as_str()));
    let second = containers(&engine, id);
    assert_ne!(
        second, first,
        "the new image did not recreate the container"
    );
    let running_image = docker(&["inspect", "--format", "{{.Image}}", "pulled-app-1"]);
    assert_eq!(running_image, v2);
    // `always` again, nothing new in the registry: nothing recreated.
    let (status, _) = run(
        &engine,
        id,
        4,
        &load(&file("always"), &host_dir, id),
        &NodePolicy::default(),
    );
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(containers(&engine, id), second);

    // `never`, and the node lacks the image: failed, naming it, nothing created.
    let absent = format!("{}/edge/absent:1", registry.host);
    let never = format!("services:\n  other:\n    image: {absent}\n    pull_policy: never\n");
    let (status, _) = run(
        &engine,
        "never",
        1,
        &load(&never, &host_dir, "never"),
        &NodePolicy::default(),
    );
    assert_eq!(status.status, State::Failed, "{status:?}");
    assert!(
        status.message.contains(&format!(
            "the image {absent} is not on the node, and its pull_policy is never"
        )),
        "{}",
        status.message
    );
    assert!(containers(&engine, "never").is_empty());
    let removed = within(60, "remove", remove(&engine, id, 5, &mut |_| {}));
    assert_eq!(removed.status, State::Removed, "{removed:?}");
}

/// A private registry: without the deploy's `registry_auth` the pull fails and says where to
/// look; with it the image is pulled, and the password shows in no status.
#[test]
fn a_private_registry_is_pulled_from_with_the_deploys_registry_auth() {
    const PASSWORD: &str = "s3cret-pull-771";
    let dockerd = dockerd("deploy-login", "private pulls were");
    let registry = support::registry::Registry::start_with_login("deploy-login", "fleet", PASSWORD)
        .unwrap_or_else(|reason| {
            panic!(
                "\n\n*** no registry on this machine, so private pulls were not tested ***\n\
                 {reason}\n(scripts/setup.sh installs docker-registry and apache2-utils)\n"
            )
        });
    // The CLI's login goes to a scratch config, not the machine's ~/.docker.
    let docker = |args: &[&str]| {
        let output = std::process::Command::new("docker")
            .env("DOCKER_CONFIG", dockerd.dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", dockerd.socket().display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            text(&output)
        );
    };
    let image = format!("{}/team/app:1", registry.host);
    dockerd.import_busybox(&image).unwrap();
    docker(&[
        "login",
        "--username",
        "fleet",
        "--password",
        PASSWORD,
        &registry.host,
    ]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);

    let engine = EngineClient::new(dockerd.socket());
    let host_dir = dockerd.dir.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let file =
        format!("services:\n  app:\n    image: {image}\n    command: [/busybox, sleep, '3600']\n");
    let project = load(&file, &host_dir, "private");
    let apply_with = |generation, auth: &BTreeMap<String, RegistryCredential>| {
        let (status, mut reports) = run_with_auth(
            &engine,
            "private",
            generation,
            &project,
            &NodePolicy::default(),
            auth,
        );
        reports.push(status.clone());
        (status, reports)
    };
    let (refused, mut reports) = apply_with(1, &BTreeMap::new());
    assert_eq!(refused.status, State::Failed, "{refused:?}");
    assert!(
        refused
            .message
            .starts_with(&format!("the image {image} cannot be pulled"))
            && refused.message.contains("registry_auth"),
        "{}",
        refused.message
    );
    let auth = BTreeMap::from([(
        registry.host.clone(),
        RegistryCredential::Password {
            username: "fleet".into(),
            password: Secret::new(PASSWORD.into()),
        },
    )]);
    let (pulled, more) = apply_with(2, &auth);
    assert_eq!(pulled.status, State::Running, "{pulled:?}");
    reports.extend(more);
    for status in &reports {
        assert!(!format!("{status:?}").contains(PASSWORD), "{status:?}");
    }
    let removed = within(60, "remove", remove(&engine, "private", 3, &mut |_| {}));
    assert_eq!(removed.status, State::Removed, "{removed:?}");
}

/// An apply that created a container but failed placing its configs leaves it created and not
/// started; the next apply places them before it starts it, as compose does before every start.
#[test]
fn a_container_left_created_gets_its_configs_before_it_starts() {
    let Setup {
        podman,
        engine,
        host_dir,
    } = setup("apply-reconf");
    let proxy = EngineProxy::start(podman.dir.join("proxy.sock"), engine.socket().into());
    let engine = EngineClient::new(&proxy.socket);
    let id = "configs-again";
    let file = FILE.replace("18081", "18083");
    let project = load(&file, &host_dir, id);
    proxy.break_on("/archive", 0, Fault::Stall(Duration::ZERO));
    let (status, _) = run(&engine, id, 1, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Failed, "{status:?}");
    assert!(
        status
            .message
            .contains("placing the configs into configs-again-db-1 failed"),
        "{}",
        status.message
    );
    let states = podman_lines(&podman, &["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(states, ["configs-again-db-1 Created"], "{states:?}");

    let (status, _) = run(&engine, id, 2, &project, &NodePolicy::default());
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(
        wait_for_file(&host_dir.join("config-seen")),
        "password=pw-7781\n"
    );
    let removed = within(60, "remove", remove(&engine, id, 3, &mut |_| {}));
    assert_eq!(removed.status, State::Removed, "{removed:?}");
}
