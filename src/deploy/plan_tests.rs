use std::collections::BTreeMap;

use super::*;
use crate::deploy::spec::ContainerSpec;

const FILE: &str = "services:\n  db:\n    image: postgres:16\n    volumes: [data:/var/lib/postgresql/data]\n  web:\n    image: nginx:1\n    depends_on: [db]\n    environment: {MODE: a}\nvolumes:\n  data:\n";

fn project(text: &str) -> ComposeProject {
    ComposeProject::load(text, &BTreeMap::new(), "shop").unwrap()
}

fn images() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("postgres:16".to_string(), "sha256:pg".to_string()),
        ("nginx:1".to_string(), "sha256:nginx".to_string()),
    ])
}

/// The container `apply` would have created for `service` number `number` of `project`.
fn container(
    project: &ComposeProject,
    service: &str,
    number: u64,
    state: &str,
) -> ContainerSummary {
    let spec = ContainerSpec {
        project,
        service: &project.services[service],
        number,
        deployment_id: "shop",
        generation: 1,
        image_id: &images()[&project.services[service].image],
    };
    ContainerSummary {
        id: format!("id-{service}-{number}"),
        names: vec![spec.name()],
        image: project.services[service].image.clone(),
        image_id: String::new(),
        labels: spec.labels(),
        state: state.to_string(),
        status: String::new(),
    }
}

fn owned_network(name: &str) -> Network {
    Network {
        id: format!("n-{name}"),
        name: name.to_string(),
        driver: "bridge".into(),
        labels: BTreeMap::from([(DEPLOYMENT_LABEL.to_string(), "shop".to_string())]),
        containers: Vec::new(),
    }
}

fn owned_volume(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        driver: "local".into(),
        mountpoint: String::new(),
        labels: BTreeMap::from([(DEPLOYMENT_LABEL.to_string(), "shop".to_string())]),
    }
}

fn plan_of(project: &ComposeProject, containers: &[ContainerSummary]) -> Plan {
    let networks = [owned_network("shop_default")];
    let volumes = [owned_volume("shop_data")];
    plan(
        project,
        "shop",
        &images(),
        &Actual {
            containers,
            networks: &networks,
            volumes: &volumes,
        },
    )
    .unwrap()
}

fn kinds(plan: &Plan) -> Vec<(String, Vec<String>)> {
    plan.services
        .iter()
        .map(|s| {
            let replicas = s
                .replicas
                .iter()
                .map(|r| match r {
                    Replica::Keep(e) => format!("keep {}", e.number),
                    Replica::Create(n) => format!("create {n}"),
                    Replica::Recreate(e) => format!("recreate {}", e.number),
                })
                .chain(s.surplus.iter().map(|e| format!("remove {}", e.name)))
                .collect();
            (s.service.clone(), replicas)
        })
        .collect()
}

fn strings(items: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    items
        .iter()
        .map(|(s, r)| (s.to_string(), r.iter().map(|x| x.to_string()).collect()))
        .collect()
}

#[test]
fn nothing_on_the_engine_creates_everything_in_dependency_order() {
    let p = project(FILE);
    let plan = plan(
        &p,
        "shop",
        &images(),
        &Actual {
            containers: &[],
            networks: &[],
            volumes: &[],
        },
    )
    .unwrap();
    assert_eq!(plan.create_networks, ["default"]);
    assert_eq!(plan.create_volumes, ["data"]);
    assert_eq!(
        kinds(&plan),
        strings(&[("db", &["create 1"]), ("web", &["create 1"])])
    );
    assert!(!plan.is_unchanged());
}

#[test]
fn an_unchanged_project_changes_nothing() {
    let p = project(FILE);
    let containers = [
        container(&p, "db", 1, "running"),
        container(&p, "web", 1, "exited"),
    ];
    let plan = plan_of(&p, &containers);
    assert!(plan.is_unchanged(), "{plan:?}");
    assert_eq!(
        kinds(&plan),
        strings(&[("db", &["keep 1"]), ("web", &["keep 1"])])
    );
}

#[test]
fn one_changed_service_recreates_only_it() {
    let old = project(FILE);
    let containers = [
        container(&old, "db", 1, "running"),
        container(&old, "web", 1, "running"),
    ];
    let new = project(&FILE.replace("MODE: a", "MODE: b"));
    let plan = plan_of(&new, &containers);
    assert_eq!(
        kinds(&plan),
        strings(&[("db", &["keep 1"]), ("web", &["recreate 1"])])
    );
    // The image tag now names another image: recreated too, as compose does.
    let mut moved = images();
    moved.insert("postgres:16".into(), "sha256:pg-newer".into());
    let networks = [owned_network("shop_default")];
    let volumes = [owned_volume("shop_data")];
    let plan = super::plan(
        &old,
        "shop",
        &moved,
        &Actual {
            containers: &containers,
            networks: &networks,
            volumes: &volumes,
        },
    )
    .unwrap();
    assert_eq!(
        kinds(&plan),
        strings(&[("db", &["recreate 1"]), ("web", &["keep 1"])])
    );
}

#[test]
fn a_removed_service_is_an_orphan() {
    let old = project(FILE);
    let containers = [
        container(&old, "db", 1, "running"),
        container(&old, "web", 1, "running"),
    ];
    let new = project(
        "services:\n  db:\n    image: postgres:16\n    volumes: [data:/var/lib/postgresql/data]\nvolumes:\n  data:\n",
    );
    let plan = plan_of(&new, &containers);
    assert_eq!(kinds(&plan), strings(&[("db", &["keep 1"])]));
    assert_eq!(plan.orphans.len(), 1);
    assert_eq!(plan.orphans[0].name, "shop-web-1");
}

#[test]
fn scaling_up_and_down() {
    let three = project(&FILE.replace(
        "    depends_on: [db]\n",
        "    depends_on: [db]\n    deploy: {replicas: 3}\n",
    ));
    // Replicas are not in the config hash: scaling keeps number 1. (A `deploy` section itself
    // is, as in compose, whose hash covers `deploy: {resources: {}}`.)
    let one = project(&FILE.replace(
        "    depends_on: [db]\n",
        "    depends_on: [db]\n    deploy: {replicas: 1}\n",
    ));
    let containers = [
        container(&one, "db", 1, "running"),
        container(&one, "web", 1, "running"),
    ];
    assert_eq!(
        kinds(&plan_of(&three, &containers)),
        strings(&[
            ("db", &["keep 1"]),
            ("web", &["keep 1", "create 2", "create 3"])
        ])
    );
    let containers: Vec<ContainerSummary> = (1..=3)
        .map(|n| container(&three, "web", n, "running"))
        .chain([container(&one, "db", 1, "running")])
        .collect();
    let plan = plan_of(&one, &containers);
    assert_eq!(
        kinds(&plan),
        strings(&[
            ("db", &["keep 1"]),
            ("web", &["keep 1", "remove shop-web-2", "remove shop-web-3"])
        ])
    );
}

#[test]
fn other_deployments_and_foreign_objects() {
    let p = project(FILE);
    let mut foreign = container(&p, "web", 1, "running");
    foreign
        .labels
        .insert(DEPLOYMENT_LABEL.into(), "other".into());
    let plan = plan_of(&p, &[foreign]);
    // Not ours: neither kept nor removed; ours is created (its name conflict is the engine's).
    assert!(plan.orphans.is_empty());
    assert_eq!(
        kinds(&plan),
        strings(&[("db", &["create 1"]), ("web", &["create 1"])])
    );
    let stranger = Network {
        labels: BTreeMap::new(),
        ..owned_network("shop_default")
    };
    let error = super::plan(
        &p,
        "shop",
        &images(),
        &Actual {
            containers: &[],
            networks: &[stranger],
            volumes: &[],
        },
    )
    .unwrap_err();
    assert!(
        error.starts_with(
            "a network named shop_default exists and does not belong to this deployment"
        ),
        "{error}"
    );
    let stranger = Volume {
        labels: BTreeMap::new(),
        ..owned_volume("shop_data")
    };
    let error = super::plan(
        &p,
        "shop",
        &images(),
        &Actual {
            containers: &[],
            networks: &[],
            volumes: &[stranger],
        },
    )
    .unwrap_err();
    assert!(error.contains("a volume named shop_data exists"), "{error}");
    let external = project(
        "services:\n  a:\n    image: x\n    networks: [edge]\nnetworks:\n  edge:\n    external: true\n",
    );
    let error = super::plan(
        &external,
        "shop",
        &images(),
        &Actual {
            containers: &[],
            networks: &[],
            volumes: &[],
        },
    )
    .unwrap_err();
    assert!(
        error.starts_with("the external network edge does not exist"),
        "{error}"
    );
}

#[test]
fn a_namespace_owner_recreated_recreates_its_sharers_and_restart_dependents() {
    let file = "services:\n  vpn:\n    image: nginx:1\n    environment: {V: '1'}\n  app:\n    image: nginx:1\n    network_mode: service:vpn\n  worker:\n    image: nginx:1\n    depends_on:\n      vpn: {condition: service_started, restart: true}\n";
    let old = project(file);
    let containers: Vec<ContainerSummary> = ["vpn", "app", "worker"]
        .iter()
        .map(|s| container(&old, s, 1, "running"))
        .collect();
    assert_eq!(order(&old), ["vpn", "app", "worker"]);
    assert!(plan_of(&old, &containers).is_unchanged());
    let new = project(&file.replace("V: '1'", "V: '2'"));
    let plan = plan_of(&new, &containers);
    assert_eq!(
        kinds(&plan),
        strings(&[
            ("vpn", &["recreate 1"]),
            ("app", &["recreate 1"]),
            ("worker", &["keep 1"])
        ])
    );
    assert!(plan.services[2].restart_kept);
}

#[test]
fn services_that_need_nothing_of_each_other_share_a_wave() {
    let file = "services:\n  web:\n    image: nginx:1\n    depends_on: [db, cache]\n  db:\n    image: nginx:1\n  cache:\n    image: nginx:1\n  proxy:\n    image: nginx:1\n    network_mode: service:web\n  batch:\n    image: nginx:1\n";
    let p = project(file);
    assert_eq!(
        waves(&p),
        [vec!["batch", "cache", "db"], vec!["web"], vec!["proxy"]]
    );
    let plan = plan_of(&p, &[]);
    let by_wave: Vec<(&str, usize)> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.wave))
        .collect();
    assert_eq!(
        by_wave,
        [
            ("batch", 0),
            ("cache", 0),
            ("db", 0),
            ("web", 1),
            ("proxy", 2)
        ]
    );
}

#[test]
fn order_puts_every_dependency_first() {
    let p = project(
        "services:\n  a:\n    image: a\n    depends_on: [c]\n  b:\n    image: b\n  c:\n    image: c\n    depends_on: [b]\n",
    );
    assert_eq!(order(&p), ["b", "c", "a"]);
    assert_eq!(waves(&p), [vec!["b"], vec!["c"], vec!["a"]]);
}
