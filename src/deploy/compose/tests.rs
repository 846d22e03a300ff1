//! Tests of the whole model: refused keys, validation errors (text and line), the config hash.

use std::collections::BTreeMap;

use super::{ComposeError, ComposeProject};

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("PASSWORD".to_string(), "hunter2-secret".to_string())])
}

fn load(yaml: &str) -> Result<ComposeProject, ComposeError> {
    ComposeProject::load(yaml, &env(), "deploy-1")
}

fn error(yaml: &str) -> ComposeError {
    load(yaml).expect_err("should be refused")
}

#[test]
fn every_refused_service_key_is_named_with_its_line() {
    for key in [
        "build: .",
        "secrets: [token]",
        "extends: {service: base}",
        "env_file: .env",
        "profiles: [debug]",
        "develop: {}",
        "userns_mode: host",
        "volumes_from: [other]",
        "links: [other]",
        "scale: 2",
        "platform: linux/amd64",
        "bogus: 1",
    ] {
        let name = key.split(':').next().unwrap();
        let error = error(&format!("services:\n  app:\n    image: app\n    {key}\n"));
        assert_eq!(error.path, format!("services.app.{name}"), "{key}");
        assert_eq!(error.line, 4, "{key}");
        assert!(
            error.to_string().starts_with(&format!(
                "services.app.{name} (line 4): `{name}` is not supported"
            )),
            "{error}"
        );
    }
}

#[test]
fn security_options_tmpfs_and_logging_are_checked_with_their_line() {
    let e = error(
        "services:\n  a:\n    image: a\n    security_opt:\n      - no-new-privileges\n      - seccomp=./profile.json\n",
    );
    assert_eq!((e.path.as_str(), e.line), ("services.a.security_opt[1]", 6));
    assert!(e.message.contains("seccomp profile file"), "{e}");
    assert!(!e.message.contains("profile.json"), "{e}");
    let e = error("services:\n  a:\n    image: a\n    security_opt: [systempaths=unconfined]\n");
    assert_eq!(e.path, "services.a.security_opt[0]");
    assert!(
        e.message
            .contains("\"systempaths=unconfined\" is not a security option"),
        "{e}"
    );
    // An interpolated value is not shown: it may be a secret of the deploy's env.
    let e = error("services:\n  a:\n    image: a\n    security_opt: ['${PASSWORD}']\n");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = error("services:\n  a:\n    image: a\n    tmpfs:\n      - /run\n      - tmp:size=1m\n");
    assert_eq!((e.path.as_str(), e.line), ("services.a.tmpfs[1]", 6));
    assert!(e.message.contains("not an absolute path"), "{e}");
    let e =
        error("services:\n  a:\n    image: a\n    logging:\n      driver: local\n      opts: {}\n");
    assert_eq!((e.path.as_str(), e.line), ("services.a.logging.opts", 6));
}

#[test]
fn pull_policy_is_read_and_leaves_the_config_hash_alone() {
    use super::PullPolicy;
    let file = |policy: &str| format!("services:\n  a:\n    image: a\n{policy}");
    let plain = load(&file("")).unwrap();
    assert_eq!(plain.services["a"].pull_policy, None);
    for (written, policy) in [
        ("always", PullPolicy::Always),
        ("missing", PullPolicy::Missing),
        ("if_not_present", PullPolicy::Missing),
        ("never", PullPolicy::Never),
    ] {
        let p = load(&file(&format!("    pull_policy: {written}\n"))).unwrap();
        assert_eq!(p.services["a"].pull_policy, Some(policy), "{written}");
        assert_eq!(p.config_hash("a"), plain.config_hash("a"), "{written}");
    }
    let e = error(&file("    pull_policy: build\n"));
    assert_eq!((e.path.as_str(), e.line), ("services.a.pull_policy", 4));
    assert!(e.message.contains("no project directory"), "{e}");
    let e = error(&file("    pull_policy: daily\n"));
    assert!(e.message.contains("expected always, missing"), "{e}");
}

#[test]
fn deploy_restart_policy_is_read_and_its_swarm_timings_refused() {
    let p = load("services:\n  a:\n    image: a\n    deploy:\n      restart_policy:\n        condition: on-failure\n        max_attempts: 3\n").unwrap();
    let policy = p.services["a"]
        .deploy
        .as_ref()
        .unwrap()
        .restart_policy
        .clone();
    assert_eq!(
        policy,
        Some(super::RestartPolicy {
            condition: Some("on-failure".into()),
            max_attempts: Some(3)
        })
    );
    let e = error(
        "services:\n  a:\n    image: a\n    deploy:\n      restart_policy:\n        condition: on-failure\n        delay: 5s\n",
    );
    assert_eq!(
        (e.path.as_str(), e.line),
        ("services.a.deploy.restart_policy.delay", 7)
    );
    assert!(e.message.contains("back-off"), "{e}");
    let e = error(
        "services:\n  a:\n    image: a\n    deploy:\n      restart_policy: {condition: sometimes}\n",
    );
    assert_eq!(e.path, "services.a.deploy.restart_policy.condition");
}

#[test]
fn refused_keys_elsewhere() {
    let e = error("services:\n  a:\n    image: a\ninclude: [other.yaml]\n");
    assert_eq!((e.path.as_str(), e.line), ("include", 4));
    let e = error("services:\n  a:\n    image: a\n    deploy:\n      placement: {}\n");
    assert_eq!(
        (e.path.as_str(), e.line),
        ("services.a.deploy.placement", 5)
    );
    assert!(e.message.contains("Swarm"), "{e}");
    let e = error(
        "services:\n  a:\n    image: a\n    configs: [c]\nconfigs:\n  c:\n    file: ./c.txt\n",
    );
    assert_eq!((e.path.as_str(), e.line), ("configs.c.file", 7));
    assert!(e.message.contains("no project directory"), "{e}");
    let e = error("services:\n  a:\n    image: a\nvolumes:\n  v:\n    driver_optz: {}\n");
    assert_eq!((e.path.as_str(), e.line), ("volumes.v.driver_optz", 6));
}

#[test]
fn extension_keys_are_allowed_where_compose_allows_them() {
    let project = load(
        "x-top: 1\nservices:\n  a:\n    image: a\n    x-svc: 2\n    networks: [n]\n    volumes: [v:/v]\nnetworks:\n  x-ignored: {}\n  n:\n    x-net: 3\nvolumes:\n  v:\n    x-vol: 4\n",
    )
    .unwrap();
    assert_eq!(project.networks.keys().collect::<Vec<_>>(), ["n"]);
}

#[test]
fn validation_errors_name_service_and_line() {
    let e = error(
        "services:\n  a:\n    image: a\n    depends_on: [b]\n  b:\n    image: b\n    depends_on: [a]\n",
    );
    assert_eq!(
        e.to_string(),
        "services.b.depends_on (line 7): a dependency cycle: a -> b -> a"
    );
    let e = error("services:\n  a:\n    image: a\n    depends_on: [a]\n");
    assert_eq!(
        e.to_string(),
        "services.a.depends_on (line 4): a dependency cycle: a -> a"
    );
    let e = error(
        "services:\n  a:\n    image: a\n    ports: ['8000-8010:80']\n  b:\n    image: b\n    ports: ['127.0.0.1:8005:80']\n",
    );
    assert_eq!(
        e.to_string(),
        "services.b.ports (line 5): the host port 8005/tcp is also published by the service \"a\""
    );
    // Other protocol, other address: no clash.
    load("services:\n  a:\n    image: a\n    ports: ['53:53/udp', '127.0.0.1:80:80']\n  b:\n    image: b\n    ports: ['53:53', '127.0.0.2:80:80']\n").unwrap();
    let e = error("services:\n  a:\n    image: a\n    configs: [missing]\n");
    assert_eq!(
        e.to_string(),
        "services.a.configs (line 4): the config \"missing\" is not defined in the top-level `configs`"
    );
    let e = error("services:\n");
    assert_eq!(e.to_string(), "services (line 1): the file has no services");
    assert_eq!(error("").to_string(), "services: the file has no services");
    let e = error("services:\n  a b:\n    image: a\n");
    assert_eq!((e.path.as_str(), e.line), ("services.a b", 2));
}

#[test]
fn env_values_stay_out_of_errors() {
    let e = error("services:\n  a:\n    image: a\n    privileged: ${PASSWORD}\n");
    assert_eq!(
        e.to_string(),
        "services.a.privileged (line 4): expected true or false"
    );
    let e = error("services:\n  a:\n    image: a\n    ports: ['${PASSWORD}:80']\n");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn normalisation_and_names() {
    let project = load(
        "name: ignored\nservices:\n  web:\n    image: nginx\n    environment: [PASSWORD, NOT_SET, A=1]\n    network_mode: host\n  db:\n    image: pg\n    container_name: db\n",
    )
    .unwrap();
    assert_eq!(project.name, "deploy-1");
    let web = &project.services["web"];
    assert_eq!(
        web.environment["PASSWORD"].as_deref(),
        Some("hunter2-secret")
    );
    assert_eq!(web.environment["NOT_SET"], None);
    assert!(web.networks.is_empty());
    assert_eq!(project.networks["default"].name, "deploy-1_default");
    assert_eq!(project.container_name(web, 2), "deploy-1-web-2");
    assert_eq!(project.container_name(&project.services["db"], 1), "db");
}

const HASHED: &str = "services:
  db:
    image: postgres:16
    command: postgres -c shared_buffers=256MB
    environment:
      POSTGRES_PASSWORD: ${PASSWORD}
    ports: ['5432:5432']
    volumes: [data:/var/lib/postgresql/data]
    configs: [{source: init, target: /docker-entrypoint-initdb.d/init.sql}]
    deploy: {replicas: 1}
  web:
    image: nginx
    depends_on: [db]
volumes:
  data:
configs:
  init:
    content: CREATE TABLE t (id int);
";

/// The hash decides which containers an upgraded agent recreates: it must not move by
/// accident. Changing it on purpose recreates every such container once.
#[test]
fn hash_is_pinned() {
    let project = load(HASHED).unwrap();
    assert_eq!(
        project.config_hash("db").unwrap(),
        "6ec3efc72c7faf242b75933617d2d09d91e594e73f3eeedf67ba410340f1e234"
    );
}

#[test]
fn hash_changes_only_with_what_needs_a_new_container() {
    let base = load(HASHED).unwrap();
    let hash = |text: &str, service: &str| load(text).unwrap().config_hash(service).unwrap();
    assert_eq!(hash(HASHED, "db"), base.config_hash("db").unwrap());
    // Replicas and start order do not recreate.
    assert_eq!(
        hash(&HASHED.replace("replicas: 1", "replicas: 3"), "db"),
        base.config_hash("db").unwrap()
    );
    assert_eq!(
        hash(&HASHED.replace("depends_on: [db]", "depends_on: []"), "web"),
        base.config_hash("web").unwrap()
    );
    // The image, an env value or a config's content do, for that service alone.
    let changed = HASHED.replace("postgres:16", "postgres:17");
    assert_ne!(hash(&changed, "db"), base.config_hash("db").unwrap());
    assert_eq!(hash(&changed, "web"), base.config_hash("web").unwrap());
    let other_env = ComposeProject::load(
        HASHED,
        &BTreeMap::from([("PASSWORD".into(), "other".into())]),
        "deploy-1",
    )
    .unwrap();
    assert_ne!(other_env.config_hash("db"), base.config_hash("db"));
    assert_ne!(
        hash(&HASHED.replace("id int", "id bigint"), "db"),
        base.config_hash("db").unwrap()
    );
    assert_eq!(base.config_hash("nope"), None);
}

#[test]
fn env_values_quoted_by_validation_are_masked() {
    let env = BTreeMap::from([
        ("NET".to_string(), "backend-secret".to_string()),
        ("P".to_string(), "80".to_string()),
    ]);
    let load = |yaml: &str| {
        ComposeProject::load(yaml, &env, "d")
            .unwrap_err()
            .to_string()
    };
    let text = load("services:\n  a:\n    image: a\n    networks: ['${NET}']\n");
    assert_eq!(
        text,
        "services.a.networks (line 4): the network \"***\" is not defined in the top-level `networks`"
    );
    let text = load(
        "services:\n  a:\n    image: a\n    ports: ['${P}:80']\n  b:\n    image: b\n    ports: ['${P}:81']\n",
    );
    assert_eq!(
        text,
        "services.b.ports (line 5): the host port ***/tcp is also published by the service \"a\""
    );
    let text = load("services:\n  a:\n    image: a\n    volumes: ['./${P}:/x']\n");
    assert!(!text.contains("80") && text.contains("not shown"), "{text}");
}
