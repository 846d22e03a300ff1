use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

fn project(text: &str) -> ComposeProject {
    let env = BTreeMap::from([("PASSWORD".to_string(), "s3cret".to_string())]);
    ComposeProject::load(text, &env, "shop").unwrap()
}

fn body(project: &ComposeProject, service: &str, number: u64) -> Value {
    let spec = ContainerSpec {
        project,
        service: &project.services[service],
        number,
        deployment_id: "shop",
        generation: 7,
        image_id: "sha256:abc",
    };
    serde_json::from_str(&spec.body()).unwrap()
}

#[test]
fn gpu_reservations_become_device_requests() {
    let p = project(
        "services:\n  llm:\n    image: vllm/vllm-openai:v0.6.0\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n            - driver: nvidia\n              device_ids: ['0', '2']\n              capabilities: [gpu, utility]\n",
    );
    let b = body(&p, "llm", 1);
    assert_eq!(
        b["HostConfig"]["DeviceRequests"],
        json!([
            {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}},
            {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "2"], "Capabilities": [["gpu", "utility"]], "Options": {}}
        ])
    );
}

#[test]
fn ports_publish_and_expose() {
    let p = project(
        "services:\n  web:\n    image: nginx\n    ports: ['8080:80', '127.0.0.1:53:53/udp', '9000-9001:90-91', '3000', '[::1]:8443:443']\n    expose: ['7000-7001', '6000/udp']\n",
    );
    let b = body(&p, "web", 1);
    assert_eq!(
        b["HostConfig"]["PortBindings"],
        json!({
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}],
            "90/tcp": [{"HostIp": "", "HostPort": "9000"}],
            "91/tcp": [{"HostIp": "", "HostPort": "9001"}],
            "3000/tcp": [{"HostIp": "", "HostPort": ""}],
            "443/tcp": [{"HostIp": "::1", "HostPort": "8443"}]
        })
    );
    let exposed: Vec<&str> = b["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        exposed,
        [
            "3000/tcp", "443/tcp", "53/udp", "6000/udp", "7000/tcp", "7001/tcp", "80/tcp",
            "90/tcp", "91/tcp"
        ]
    );
}

#[test]
fn mounts_binds_volumes_and_tmpfs() {
    let p = project(
        "services:\n  db:\n    image: postgres:16\n    volumes:\n      - data:/var/lib/postgresql/data\n      - /srv/conf:/etc/conf:ro\n      - /cache\n      - type: tmpfs\n        target: /run\n        tmpfs: {size: 1m, mode: 0o1777}\n      - type: bind\n        source: /srv/sock\n        target: /sock\n        read_only: true\n        bind: {create_host_path: false, propagation: rslave}\n      - type: volume\n        source: ext\n        target: /ext\n        volume: {nocopy: true}\nvolumes:\n  data:\n  ext:\n    external: true\n    name: shared-data\n",
    );
    let b = body(&p, "db", 1);
    assert_eq!(b["HostConfig"]["Binds"], json!(["/srv/conf:/etc/conf:ro"]));
    assert_eq!(
        b["HostConfig"]["Mounts"],
        json!([
            {"Type": "volume", "Source": "shop_data", "Target": "/var/lib/postgresql/data"},
            {"Type": "volume", "Target": "/cache"},
            {"Type": "tmpfs", "Target": "/run", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}},
            {"Type": "bind", "Source": "/srv/sock", "Target": "/sock", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}},
            {"Type": "volume", "Source": "shared-data", "Target": "/ext", "VolumeOptions": {"NoCopy": true}}
        ])
    );
}

#[test]
fn healthcheck_durations_in_nanoseconds() {
    let p = project(
        "services:\n  db:\n    image: postgres:16\n    healthcheck:\n      test: pg_isready -U postgres\n      interval: 10s\n      timeout: 1m30s\n      start_period: 500ms\n      retries: 5\n  off:\n    image: x\n    healthcheck: {disable: true}\n",
    );
    assert_eq!(
        body(&p, "db", 1)["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "pg_isready -U postgres"], "Interval": 10_000_000_000u64,
               "Timeout": 90_000_000_000u64, "StartPeriod": 500_000_000u64, "Retries": 5})
    );
    assert_eq!(body(&p, "off", 1)["Healthcheck"], json!({"Test": ["NONE"]}));
}

#[test]
fn limits_and_host_settings() {
    let p = project(
        "services:\n  app:\n    image: app\n    mem_limit: 256m\n    cpus: 0.5\n    shm_size: 64m\n    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}\n    cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n    privileged: true\n    devices: ['/dev/ttyUSB0:/dev/ttyACM0:rw']\n    ipc: host\n    pid: host\n    extra_hosts: ['db.local:10.0.0.5', 'v6=::1']\n    restart: on-failure:3\n    stop_signal: SIGINT\n    stop_grace_period: 1m30s\n    tty: true\n    stdin_open: true\n  limited:\n    image: app\n    mem_limit: 1g\n    cpus: 4\n    deploy:\n      resources:\n        limits: {cpus: '1.5', memory: 512m, pids: 100}\n        reservations: {memory: 128m}\n",
    );
    let b = body(&p, "app", 1);
    let host = &b["HostConfig"];
    assert_eq!(host["Memory"], json!(268435456));
    assert_eq!(host["NanoCpus"], json!(500_000_000));
    assert_eq!(host["ShmSize"], json!(67108864));
    assert_eq!(
        host["Ulimits"],
        json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 512, "Hard": 512}])
    );
    assert_eq!(host["CapAdd"], json!(["NET_ADMIN"]));
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["Privileged"], json!(true));
    assert_eq!(
        host["Devices"],
        json!([{"PathOnHost": "/dev/ttyUSB0", "PathInContainer": "/dev/ttyACM0", "CgroupPermissions": "rw"}])
    );
    assert_eq!(
        (&host["IpcMode"], &host["PidMode"]),
        (&json!("host"), &json!("host"))
    );
    assert_eq!(host["ExtraHosts"], json!(["db.local:10.0.0.5", "v6:::1"]));
    assert_eq!(
        host["RestartPolicy"],
        json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    assert_eq!(
        (&b["StopSignal"], &b["StopTimeout"]),
        (&json!("SIGINT"), &json!(90))
    );
    assert_eq!((&b["Tty"], &b["OpenStdin"]), (&json!(true), &json!(true)));
    let limited = body(&p, "limited", 1);
    let host = &limited["HostConfig"];
    // deploy.resources.limits wins over mem_limit and cpus, as in compose.
    assert_eq!(host["Memory"], json!(536870912));
    assert_eq!(host["NanoCpus"], json!(1_500_000_000));
    assert_eq!(host["PidsLimit"], json!(100));
    assert_eq!(host["MemoryReservation"], json!(134217728));
    assert_eq!(
        host["RestartPolicy"],
        json!({"Name": "no", "MaximumRetryCount": 0})
    );
    assert!(host.get("Privileged").is_none());
}

#[test]
fn logging_confinement_scheduling_and_dns() {
    let p = project(
        "services:\n  app:\n    image: app\n    logging:\n      driver: json-file\n      options: {max-size: 10m, max-file: 3}\n    init: true\n    read_only: true\n    tmpfs: [/run, '/tmp:size=64m,mode=1777']\n    dns: 1.1.1.1\n    sysctls: [net.core.somaxconn=1024]\n    security_opt: ['no-new-privileges:true', 'label=disable']\n    group_add: [dialout, 44]\n    cpuset: 0-1\n    cpu_shares: 512\n    pids_limit: 64\n    mem_reservation: 32m\n    dns_search: edge.local\n    dns_opt: ['ndots:2']\n  limited:\n    image: app\n    pids_limit: 64\n    mem_reservation: 32m\n    deploy:\n      resources:\n        limits: {pids: 100}\n        reservations: {memory: 128m}\n  plain:\n    image: app\n    init: false\n    logging: {options: {max-size: 1m}}\n",
    );
    let host = &body(&p, "app", 1)["HostConfig"];
    assert_eq!(
        host["LogConfig"],
        json!({"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}})
    );
    assert_eq!(host["Init"], json!(true));
    assert_eq!(host["ReadonlyRootfs"], json!(true));
    assert_eq!(
        host["Tmpfs"],
        json!({"/run": "", "/tmp": "size=64m,mode=1777"})
    );
    assert_eq!(host["Dns"], json!(["1.1.1.1"]));
    assert_eq!(host["Sysctls"], json!({"net.core.somaxconn": "1024"}));
    assert_eq!(
        host["SecurityOpt"],
        json!(["no-new-privileges:true", "label=disable"])
    );
    assert_eq!(host["GroupAdd"], json!(["dialout", "44"]));
    assert_eq!(host["CpusetCpus"], json!("0-1"));
    assert_eq!(host["CpuShares"], json!(512));
    assert_eq!(host["PidsLimit"], json!(64));
    assert_eq!(host["MemoryReservation"], json!(33554432));
    assert_eq!(host["DnsSearch"], json!(["edge.local"]));
    assert_eq!(host["DnsOptions"], json!(["ndots:2"]));
    // deploy.resources wins over pids_limit and mem_reservation, as in compose.
    let limited = &body(&p, "limited", 1)["HostConfig"];
    assert_eq!(limited["PidsLimit"], json!(100));
    assert_eq!(limited["MemoryReservation"], json!(134217728));
    // Unset, the engine's defaults: nothing sent. An explicit `init: false` is sent, and
    // options without a driver go to the engine's default driver.
    let plain = &body(&p, "plain", 1)["HostConfig"];
    for key in [
        "ReadonlyRootfs",
        "Tmpfs",
        "Dns",
        "Sysctls",
        "SecurityOpt",
        "GroupAdd",
        "CpusetCpus",
        "CpuShares",
        "PidsLimit",
        "MemoryReservation",
        "DnsSearch",
        "DnsOptions",
    ] {
        assert!(plain.get(key).is_none(), "{key}: {plain}");
    }
    assert_eq!(plain["Init"], json!(false));
    assert_eq!(
        plain["LogConfig"],
        json!({"Type": "", "Config": {"max-size": "1m"}})
    );
}

#[test]
fn labels_name_env_command_and_networks() {
    let p = project(
        "services:\n  db:\n    image: postgres:16\n    labels: {team: data, com.docker.compose.project: spoofed, io.miaas.deployment: other}\n    environment:\n      POSTGRES_PASSWORD: ${PASSWORD}\n      UNSET:\n    command: []\n    networks:\n      back:\n        aliases: [database]\n      default:\n  web:\n    image: nginx\n    container_name: front\n    entrypoint: [/bin/sh, -c]\n    command: echo hi\n    working_dir: /srv\n    user: '1000:1000'\n    hostname: web.local\n    depends_on:\n      db: {condition: service_healthy, restart: true}\n  side:\n    image: x\n    network_mode: service:db\nnetworks:\n  back:\n",
    );
    let db = body(&p, "db", 2);
    let labels = &db["Labels"];
    assert_eq!(labels["team"], "data");
    assert_eq!(labels["com.docker.compose.project"], "shop");
    assert_eq!(labels["io.miaas.deployment"], "shop");
    assert_eq!(labels["io.miaas.generation"], "7");
    assert_eq!(labels["com.docker.compose.service"], "db");
    assert_eq!(labels["com.docker.compose.container-number"], "2");
    assert_eq!(labels["com.docker.compose.oneoff"], "False");
    assert_eq!(labels["com.docker.compose.image"], "sha256:abc");
    assert_eq!(
        labels["com.docker.compose.config-hash"],
        p.config_hash("db").unwrap().as_str()
    );
    assert_eq!(db["Env"], json!(["POSTGRES_PASSWORD=s3cret"]));
    assert_eq!((&db["Cmd"], &db["Entrypoint"]), (&json!([]), &Value::Null));
    // The first network (by key) at create, with the service's and the container's names.
    assert_eq!(db["HostConfig"]["NetworkMode"], "shop_back");
    assert_eq!(
        db["NetworkingConfig"],
        json!({"EndpointsConfig": {"shop_back": {"Aliases": ["db", "shop-db-2", "database"]}}})
    );
    let spec = ContainerSpec {
        project: &p,
        service: &p.services["db"],
        number: 2,
        deployment_id: "shop",
        generation: 7,
        image_id: "sha256:abc",
    };
    assert_eq!(
        spec.networks(),
        vec![
            (
                "shop_back".to_string(),
                vec!["db".to_string(), "shop-db-2".into(), "database".into()]
            ),
            (
                "shop_default".to_string(),
                vec!["db".to_string(), "shop-db-2".into()]
            ),
        ]
    );
    let web = body(&p, "web", 1);
    assert_eq!(web["Entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(web["Cmd"], json!(["echo", "hi"]));
    assert_eq!(
        (&web["WorkingDir"], &web["User"], &web["Hostname"]),
        (&json!("/srv"), &json!("1000:1000"), &json!("web.local"))
    );
    assert_eq!(
        web["Labels"]["com.docker.compose.depends_on"],
        "db:service_healthy:true"
    );
    assert_eq!(
        web["NetworkingConfig"]["EndpointsConfig"]["shop_default"]["Aliases"],
        json!(["web", "front"])
    );
    let side = body(&p, "side", 1);
    assert_eq!(side["HostConfig"]["NetworkMode"], "container:shop-db-1");
    assert!(side.get("NetworkingConfig").is_none());
}

#[test]
fn networks_and_volumes_carry_compose_and_ownership_labels() {
    let p = project(
        "services:\n  a:\n    image: x\n    networks: [back]\n    volumes: [data:/d]\nnetworks:\n  back:\n    driver: bridge\n    internal: true\n    labels: {tier: back}\n    ipam:\n      config: [{subnet: 10.9.0.0/24}]\nvolumes:\n  data:\n    labels: {keep: 'yes'}\n",
    );
    let network: Value =
        serde_json::from_str(&network_body(&p, "back", &p.networks["back"], "shop")).unwrap();
    assert_eq!(network["Name"], "shop_back");
    assert_eq!(network["Internal"], true);
    assert_eq!(
        network["IPAM"]["Config"],
        json!([{"Subnet": "10.9.0.0/24"}])
    );
    let labels = &network["Labels"];
    assert_eq!(
        (
            &labels["com.docker.compose.network"],
            &labels["com.docker.compose.project"]
        ),
        (&json!("back"), &json!("shop"))
    );
    assert_eq!(
        (&labels["io.miaas.deployment"], &labels["tier"]),
        (&json!("shop"), &json!("back"))
    );
    let volume: Value =
        serde_json::from_str(&volume_body(&p, "data", &p.volumes["data"], "shop")).unwrap();
    assert_eq!(volume["Name"], "shop_data");
    assert_eq!(volume["Labels"]["com.docker.compose.volume"], "data");
    assert_eq!(volume["Labels"]["io.miaas.deployment"], "shop");
    assert_eq!(volume["Labels"]["keep"], "yes");
}

#[test]
fn configs_are_archived_at_their_target_with_owner_and_mode() {
    let p = project(
        "services:\n  app:\n    image: x\n    configs:\n      - source: conf\n        target: /etc/app/app.conf\n        uid: '1000'\n        gid: '1001'\n        mode: 0440\n      - plain\nconfigs:\n  conf:\n    content: |\n      password=${PASSWORD}\n  plain:\n    content: hello\n",
    );
    let spec = ContainerSpec {
        project: &p,
        service: &p.services["app"],
        number: 1,
        deployment_id: "shop",
        generation: 1,
        image_id: "sha256:abc",
    };
    let archives = spec.config_archives().unwrap();
    assert_eq!(archives.len(), 2);
    let (dir, tar) = &archives[0];
    assert_eq!(dir, "/");
    assert_eq!(&tar[..17], b"etc/app/app.conf\0");
    assert_eq!(&tar[100..107], b"0000440");
    assert_eq!(&tar[108..115], b"0001750"); // uid 1000
    assert_eq!(&tar[116..123], b"0001751"); // gid 1001
    assert_eq!(&tar[512..528], b"password=s3cret\n");
    let (_, tar) = &archives[1];
    assert_eq!(&tar[..6], b"plain\0");
    assert_eq!(&tar[100..107], b"0000444");
}

#[test]
fn deploy_restart_policy_wins_over_restart_as_in_compose() {
    let p = project(
        "services:\n  a:\n    image: app\n    restart: always\n    deploy:\n      restart_policy: {condition: on-failure, max_attempts: 5}\n  b:\n    image: app\n    deploy:\n      restart_policy: {condition: any}\n  c:\n    image: app\n    restart: unless-stopped\n    deploy:\n      restart_policy: {max_attempts: 2}\n",
    );
    let policy = |service: &str| body(&p, service, 1)["HostConfig"]["RestartPolicy"].clone();
    assert_eq!(
        policy("a"),
        json!({"Name": "on-failure", "MaximumRetryCount": 5})
    );
    assert_eq!(
        policy("b"),
        json!({"Name": "always", "MaximumRetryCount": 0})
    );
    // No condition: compose sends no policy name, which the engine takes as `no`.
    assert_eq!(policy("c"), json!({"Name": "no", "MaximumRetryCount": 2}));
}
