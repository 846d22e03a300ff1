//! What ships beside the binary: the systemd install, the Compose file and the Kubernetes
//! DaemonSet. Each variable they set must be one the agent knows, read from the binary's own
//! `--help`, so none of them can drift from the code.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every `[env NAME, …]` in the binary's `--help`.
fn known_variables() -> BTreeSet<String> {
    let output = support::command(&[]).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let known: BTreeSet<String> = help
        .split("[env")
        .skip(1)
        .map(|rest| {
            // argh wraps descriptions, so the name may start the next line.
            rest.trim_start()
                .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        known.len() >= 10 && known.contains("CONTROL_PLANE_URL"),
        "cannot read the variables from --help:\n{help}"
    );
    known
}

/// Every variable a manifest sets must be one the agent's `--help` lists.
fn assert_known(source: &str, names: &BTreeSet<String>) {
    assert!(!names.is_empty(), "{source} sets no variables");
    let known = known_variables();
    for name in names {
        assert!(
            known.contains(name),
            "{source} sets {name}, which the agent does not know: {known:?}"
        );
    }
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn daemonset_sets_only_known_variables_and_is_locked_down() {
    let documents = yaml_documents("deploy/kubernetes/daemonset.yaml");
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let daemon_set = documents
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &daemon_set["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    let env = container["env"].as_sequence().unwrap();
    let names: BTreeSet<String> = env
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_known("daemonset.yaml", &names);
    // The ConfigMap's keys are variables too (they could be loaded with envFrom).
    let keys: BTreeSet<String> = config_map["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_known("daemonset.yaml ConfigMap", &keys);

    let value_of = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        value_of("NODE_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        value_of("CONTROL_PLANE_URL").unwrap()["valueFrom"]["configMapKeyRef"]["name"],
        config_map["metadata"]["name"]
    );

    // The host's /proc, /sys and / mounted read-only where HOST_PROC, HOST_SYS, HOST_ROOT say.
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    for (variable, host_path) in [
        ("HOST_PROC", "/proc"),
        ("HOST_SYS", "/sys"),
        ("HOST_ROOT", "/"),
    ] {
        let in_container = value_of(variable).unwrap()["value"].clone();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == in_container)
            .unwrap_or_else(|| panic!("nothing mounted at {variable}={in_container:?}"));
        assert_eq!(mount["readOnly"], true, "{variable} mount is writable");
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        assert_eq!(volume["hostPath"]["path"], host_path, "{variable}");
    }
    // CA_CERT names a file in the mounted Secret.
    let ca_cert = value_of("CA_CERT").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let ca_mount = mounts
        .iter()
        .find(|m| ca_cert.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("CA_CERT is in a mounted volume");
    let ca_volume = volumes
        .iter()
        .find(|v| v["name"] == ca_mount["name"])
        .unwrap();
    assert!(ca_volume["secret"]["secretName"].is_string());

    // Read-only, no capabilities, no escalation, bounded (root for the engine's socket: see
    // `every_shipped_form_can_reach_the_engine_socket_and_says_what_that_grants`).
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(string_list(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(security["capabilities"]["add"].is_null());
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "no {kind}.{resource}"
            );
        }
    }
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_ne!(pod["hostNetwork"], true);
}

#[test]
fn compose_file_sets_only_known_variables() {
    let documents = yaml_documents("compose.yaml");
    let agent = &documents[0]["services"]["agent"];
    let names: BTreeSet<String> = agent["environment"]
        .as_mapping()
        .expect("environment as a map")
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_known("compose.yaml", &names);
    assert!(names.contains("CONTROL_PLANE_URL") && names.contains("HEARTBEAT_INTERVAL"));
    assert_eq!(agent["build"]["dockerfile"], "Containerfile");
    assert_eq!(string_list(&agent["cap_drop"]), ["ALL"]);
    assert_eq!(agent["read_only"], true);
}

/// A temporary root to install into, removed when dropped.
struct DestDir(PathBuf);

impl Drop for DestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn install(destdir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let output = Command::new("bash")
        .arg(repo("scripts/install.sh"))
        .args(args)
        .env("DESTDIR", destdir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "install.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn install_script_installs_a_hardened_service_and_uninstalls_it() {
    let destdir =
        DestDir(std::env::temp_dir().join(format!("miaas-install-{}", std::process::id())));
    let root = destdir.0.as_path();
    let binary = support::binary();
    install(
        root,
        &[binary.to_str().unwrap()],
        &[("CONTROL_PLANE_URL", "http://cp.example:8080")],
    );

    use std::os::unix::fs::PermissionsExt;
    let installed = root.join("usr/local/bin/miaas-agent");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&binary).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // The environment file: the URL given, every other setting a known variable.
    let env_file = std::fs::read_to_string(root.join("etc/miaas-agent.env")).unwrap();
    assert!(env_file.contains("\nCONTROL_PLANE_URL=http://cp.example:8080\n"));
    let names: BTreeSet<String> = env_file
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_string()))
        .filter(|name| !name.contains(' '))
        .collect();
    assert!(names.len() >= 6, "{env_file}");
    assert_known("miaas-agent.env", &names);

    let unit_path = root.join("etc/systemd/system/miaas-agent.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/miaas-agent",
        "EnvironmentFile=/etc/miaas-agent.env",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=always",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit lacks {line}:\n{unit}"
        );
    }
    systemd_analyze_verify(root, &unit);

    // Installing again keeps the node's settings.
    install(root, &[binary.to_str().unwrap()], &[]);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/miaas-agent.env")).unwrap(),
        env_file
    );

    install(root, &["--uninstall"], &[]);
    for path in [&installed, &unit_path, &root.join("etc/miaas-agent.env")] {
        assert!(!path.exists(), "{} is left", path.display());
    }
}

#[test]
fn install_script_allows_the_nvidia_devices_only_when_asked() {
    let destdir =
        DestDir(std::env::temp_dir().join(format!("miaas-install-nvidia-{}", std::process::id())));
    let root = destdir.0.as_path();
    let binary = support::binary();
    let dropin = root.join("etc/systemd/system/miaas-agent.service.d/nvidia.conf");
    install(root, &[binary.to_str().unwrap()], &[]);
    assert!(
        !dropin.exists(),
        "devices allowed without NVIDIA_DEVICES=yes"
    );

    install(
        root,
        &[binary.to_str().unwrap()],
        &[("NVIDIA_DEVICES", "yes")],
    );
    let allowed = std::fs::read_to_string(&dropin).unwrap();
    for line in [
        "[Service]",
        "PrivateDevices=no",
        "DevicePolicy=closed",
        "DeviceAllow=char-nvidia-frontend rw",
    ] {
        assert!(
            allowed.lines().any(|l| l == line),
            "the drop-in lacks {line}:\n{allowed}"
        );
    }
    // systemd reads a drop-in as if appended to the unit.
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/miaas-agent.service")).unwrap();
    systemd_analyze_verify(root, &format!("{unit}\n{allowed}"));

    // Installing again without it takes the devices away; a bad value changes nothing.
    install(root, &[binary.to_str().unwrap()], &[]);
    assert!(!dropin.exists());
    let refused = Command::new("bash")
        .arg(repo("scripts/install.sh"))
        .arg(&binary)
        .env("DESTDIR", root)
        .env("NVIDIA_DEVICES", "maybe")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "install: NVIDIA_DEVICES must be yes or no, not 'maybe'\n"
    );

    install(
        root,
        &[binary.to_str().unwrap()],
        &[("NVIDIA_DEVICES", "yes")],
    );
    install(root, &["--uninstall"], &[]);
    assert!(
        !dropin.parent().unwrap().exists(),
        "the drop-in directory is left"
    );
}

/// `systemd-analyze verify` on the unit, its ExecStart pointed into the temporary root (verify
/// checks that the command exists). Skipped, loudly, where systemd is not installed, except in
/// CI, where scripts/setup.sh installs it.
fn systemd_analyze_verify(root: &Path, unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("systemd-analyze is not installed: the unit is NOT verified");
        return;
    }
    let copy = root.join("miaas-agent.service");
    let bin = root.join("usr/local/bin/miaas-agent");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/miaas-agent", bin.to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "systemd-analyze verify: {said}");
    // Only the back-off keys of systemd 254 may be unknown (to an older systemd, which ignores
    // them); anything else it says is a mistake in the unit.
    for line in said.lines().filter(|line| !line.trim().is_empty()) {
        assert!(
            line.contains("Unknown key 'RestartSteps'")
                || line.contains("Unknown key 'RestartMaxDelaySec'"),
            "systemd-analyze verify: {line}"
        );
    }
}

/// The version the image is labelled with and the tag the DaemonSet runs are the crate's.
#[test]
fn image_label_and_daemonset_tag_carry_the_crate_version() {
    let version = env!("CARGO_PKG_VERSION");
    let containerfile = std::fs::read_to_string(repo("Containerfile")).unwrap();
    assert!(
        containerfile
            .lines()
            .any(|line| line == format!("ARG VERSION={version}")),
        "Containerfile's ARG VERSION is not {version}"
    );
    let documents = yaml_documents("deploy/kubernetes/daemonset.yaml");
    let daemon_set = documents.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let image = daemon_set["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(image, format!("miaas-agent:{version}"));
}

/// Where the agent looks for the engine's socket (`--help`'s DOCKER_HOST default).
const ENGINE_SOCKETS: [&str; 3] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
];

/// What a form must say beside its grant of the engine's socket.
#[track_caller]
fn assert_documents_the_grant(source: &str, text: &str) {
    // Comments as one line of words: a sentence may wrap.
    let text = text
        .split_whitespace()
        .filter(|word| *word != "#")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("whoever can use the socket is root on")
            || text.contains("whoever can use it is root on"),
        "{source} gives the engine's socket without saying that it makes a deploying control \
         plane root on the node"
    );
    assert!(
        text.contains("DEPLOYMENTS=off"),
        "{source} does not say how to keep the agent report-only (DEPLOYMENTS=off)"
    );
}

/// Every form deployments can run in reaches the engine's socket: mounted where the agent
/// looks, usable by the agent's user (its owner, root, without capabilities, or its group),
/// with what that grants written beside it.
#[test]
fn every_shipped_form_can_reach_the_engine_socket_and_says_what_that_grants() {
    assert!(
        known_variables().contains("DEPLOYMENTS"),
        "--help lists no DEPLOYMENTS"
    );

    // compose.yaml: the socket mounted at a path the agent looks at, used as root.
    let text = std::fs::read_to_string(repo("compose.yaml")).unwrap();
    let agent = &yaml_documents("compose.yaml")[0]["services"]["agent"];
    let volumes = string_list(&agent["volumes"]);
    assert!(
        volumes.iter().any(|v| {
            // SOURCE:TARGET[:ro], the source perhaps `${VAR:-default}`.
            let target = v.trim_end_matches(":ro").rsplit(':').next().unwrap_or("");
            ENGINE_SOCKETS.contains(&target)
        }),
        "compose.yaml mounts no engine socket where the agent looks: {volumes:?}"
    );
    let user = agent["user"].as_str().unwrap_or("");
    assert!(
        user == "0" || user.starts_with("0:") || !agent["group_add"].is_null(),
        "compose.yaml runs the agent as {user:?}, which cannot use a root-owned 0660 socket"
    );
    assert_eq!(string_list(&agent["cap_drop"]), ["ALL"]);
    assert_documents_the_grant("compose.yaml", &text);

    // The DaemonSet: the host's root (where the agent looks under HOST_ROOT) mounted, used as
    // root without capabilities.
    let text = std::fs::read_to_string(repo("deploy/kubernetes/daemonset.yaml")).unwrap();
    let documents = yaml_documents("deploy/kubernetes/daemonset.yaml");
    let daemon_set = documents.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &daemon_set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let host_root = env
        .iter()
        .find(|e| e["name"] == "HOST_ROOT")
        .and_then(|e| e["value"].as_str())
        .expect("HOST_ROOT");
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == host_root)
        .expect("HOST_ROOT mounted");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["hostPath"]["path"], "/",
        "the host root holds the sockets"
    );
    assert_eq!(
        mount["mountPropagation"], "HostToContainer",
        "a socket made after the pod started (an engine restarted) would not be seen"
    );
    let security = &pod["securityContext"];
    assert!(
        security["runAsUser"] == 0 || !security["supplementalGroups"].is_null(),
        "the DaemonSet runs as {:?}, which cannot use a root-owned 0660 socket",
        security["runAsUser"]
    );
    assert_eq!(
        string_list(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert_documents_the_grant("daemonset.yaml", &text);

    // The systemd unit: the socket's group for the dynamic user, and unix sockets allowed.
    let destdir =
        DestDir(std::env::temp_dir().join(format!("miaas-install-engine-{}", std::process::id())));
    let binary = support::binary();
    install(
        &destdir.0,
        &[binary.to_str().unwrap()],
        &[("ENGINE_GROUP", "docker")],
    );
    let unit =
        std::fs::read_to_string(destdir.0.join("etc/systemd/system/miaas-agent.service")).unwrap();
    assert!(
        unit.lines().any(|l| l == "SupplementaryGroups=docker"),
        "the unit does not give the agent the engine socket's group:\n{unit}"
    );
    assert!(
        unit.lines()
            .any(|l| l.starts_with("RestrictAddressFamilies=") && l.contains("AF_UNIX")),
        "the unit forbids unix sockets:\n{unit}"
    );
    let script = std::fs::read_to_string(repo("scripts/install.sh")).unwrap();
    assert_documents_the_grant("scripts/install.sh", &script);
    assert!(
        unit.contains("root on this host"),
        "the unit does not say what the group grants:\n{unit}"
    );

    // The image: how to run it with the socket, and what that grants.
    let text = std::fs::read_to_string(repo("Containerfile")).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with('#')
            && ENGINE_SOCKETS
                .iter()
                .any(|s| l.contains(&format!("{s}:{s}")))
            && !l.contains("65534")),
        "the Containerfile does not say how to give the image the engine's socket"
    );
    assert!(
        text.contains("--user 0:0") || text.contains("--group-add"),
        "the Containerfile's nobody cannot use a root-owned 0660 socket, and it does not say \
         which user can"
    );
    assert_documents_the_grant("Containerfile", &text);
}
