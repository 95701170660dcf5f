//! docker-compose.yml must only use flags and env vars our binaries really have,
//! run every one of them, and keep the promises its comments make (and so
//! must docker-compose.cluster.yml laid over it): passwords
//! only in identity files the `init` service creates (one per process, read by
//! that service's user; workers claim theirs from a pool), nats-server on our
//! nats.conf, healthchecks on the real ports, host
//! ports on 127.0.0.1, a Dockerfile the classic builder can build. Docker is not
//! needed: `./jetinfer compose-test` runs the file for real.

use clap::CommandFactory;
use jetinfer_dashboard::config::DashboardArgs;
use jetinfer_gateway::config::GatewayArgs;
use jetinfer_worker::config::WorkerArgs;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Where the compose file mounts the `secrets` volume.
const SECRETS: &str = "/run/secrets/jetinfer";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Long flags and env var names a binary accepts.
fn options(cmd: clap::Command) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            flags.insert(format!("--{long}"));
        }
        if let Some(env) = arg.get_env() {
            envs.insert(env.to_string_lossy().into_owned());
        }
    }
    (flags, envs)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn compose() -> Mapping {
    compose_files(&["docker-compose.yml"])
}

/// The services of `files` laid over one another, as `docker compose -f A -f
/// B` reads them.
fn compose_files(files: &[&str]) -> Mapping {
    let mut merged = Value::Null;
    for file in files {
        let mut doc: Value = serde_yaml::from_str(&read(file)).expect("valid YAML");
        // A merge that brings in a mapping with its own `<<` (x-worker merges
        // x-jetinfer) needs one pass per level.
        for _ in 0..4 {
            doc.apply_merge().expect("merge keys resolve");
        }
        overlay(&mut merged, doc);
    }
    merged["services"].as_mapping().expect("services").clone()
}

/// Compose's override rule: mappings (services, environment, depends_on)
/// merge key by key, anything else is replaced by the later file's.
fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(old) => overlay(old, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn service<'a>(services: &'a Mapping, name: &str) -> &'a Value {
    services
        .get(Value::from(name))
        .unwrap_or_else(|| panic!("service `{name}`"))
}

/// The services that run one of our binaries, with that binary's name.
fn binaries(services: &Mapping) -> Vec<(String, String, &Value)> {
    services
        .iter()
        .filter_map(|(name, s)| {
            let program = strings(&s["command"]).first().cloned()?;
            ["worker", "gateway", "dashboard"]
                .contains(&program.as_str())
                .then(|| (name.as_str().unwrap().to_owned(), program, s))
        })
        .collect()
}

fn env(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(source, target, read_only)` of each volume entry in short syntax.
fn volumes(service: &Value) -> Vec<(String, String, bool)> {
    strings(&service["volumes"])
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            assert!(parts.len() >= 2, "volume `{v}`: source:target[:mode]");
            (
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

fn depends_on(service: &Value, on: &str) -> Option<String> {
    service["depends_on"].get(on).map(|c| {
        c["condition"]
            .as_str()
            .unwrap_or("service_started")
            .to_owned()
    })
}

#[test]
fn compose_services_use_only_real_flags_and_env_vars() {
    let services = compose();
    assert_real_options(&services);
    let workers: Vec<&Value> = services
        .values()
        .filter(|s| strings(&s["command"]).first().map(String::as_str) == Some("worker"))
        .collect();
    assert_eq!(workers.len(), 1, "one worker service, scaled");
    assert_eq!(workers[0]["scale"].as_u64(), Some(3), "three workers");
}

/// Every flag and env var a service of ours is given is one its binary has;
/// each binary runs; workers restart.
fn assert_real_options(services: &Mapping) {
    let mut seen = BTreeSet::new();
    for (name, program, service) in binaries(services) {
        let (flags, envs) = match program.as_str() {
            "worker" => options(WorkerArgs::command()),
            "gateway" => options(GatewayArgs::command()),
            _ => options(DashboardArgs::command()),
        };
        seen.insert(program.clone());
        let command = strings(&service["command"]);
        for arg in command.iter().skip(1).filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            assert!(
                flags.contains(flag),
                "{name}: `{flag}` is not a flag of `{program}`"
            );
        }
        let env = service["environment"]
            .as_mapping()
            .expect("environment map");
        for key in env.keys() {
            let key = key.as_str().unwrap();
            assert!(
                envs.contains(key),
                "{name}: env `{key}` is not read by `{program}`"
            );
        }
        if program == "worker" {
            assert!(
                service["restart"].as_str().is_some(),
                "{name}: workers restart"
            );
        }
    }
    let binaries = ["dashboard", "gateway", "worker"].map(String::from);
    assert_eq!(seen, BTreeSet::from(binaries));
}

/// docker-compose.cluster.yml over docker-compose.yml: three nats-servers
/// routed to one another, each with its own name and store, on our config
/// and logins; every service given all three and three copies of everything.
#[test]
fn the_cluster_file_routes_three_nodes_and_points_every_service_at_them() {
    let services = compose_files(&["docker-compose.yml", "docker-compose.cluster.yml"]);
    assert_real_options(&services);
    let nodes: Vec<(&str, &Value)> = (services.iter())
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("nats:")))
        .map(|(name, s)| (name.as_str().unwrap(), s))
        .collect();
    assert_eq!(nodes.len(), 3, "three nats-servers");
    let flag = |command: &[String], name: &str| {
        (command.windows(2))
            .find(|w| w[0] == name)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("{command:?}: {name}"))
    };
    let (mut names, mut stores) = (BTreeSet::new(), BTreeSet::new());
    for (name, node) in &nodes {
        let command = strings(&node["command"]);
        assert_eq!(
            flag(&command, "-c"),
            format!("{SECRETS}/nats-server/nats.conf")
        );
        assert_eq!(flag(&command, "--cluster_name"), "jetinfer");
        assert_eq!(flag(&command, "--cluster"), "nats://0.0.0.0:6222");
        let routes: BTreeSet<String> = (flag(&command, "--routes").split(','))
            .map(str::to_owned)
            .collect();
        let others: BTreeSet<String> = (nodes.iter())
            .filter(|(other, _)| other != name)
            .map(|(other, _)| format!("nats://{other}:6222"))
            .collect();
        assert_eq!(routes, others, "{name}: routes to the other two");
        names.insert(flag(&command, "--server_name"));
        let store = flag(&command, "-sd");
        let (volume, _, _) = (volumes(node).into_iter())
            .find(|(_, target, _)| *target == store)
            .unwrap_or_else(|| panic!("{name}: its store {store} is a volume"));
        stores.insert(volume);
        assert!(volumes(node).contains(&("secrets".into(), SECRETS.into(), true)));
        assert_eq!(
            depends_on(node, "init").as_deref(),
            Some("service_completed_successfully"),
            "{name}: starts once the identities exist"
        );
        for port in strings(&node["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name}: `{port}`");
        }
    }
    assert_eq!(names.len(), 3, "each node its own server_name: {names:?}");
    assert_eq!(stores.len(), 3, "each node its own store: {stores:?}");
    let urls: BTreeSet<String> = (nodes.iter())
        .map(|(node, _)| format!("nats://{node}:4222"))
        .collect();
    for (name, program, service) in binaries(&services) {
        let env = env(service);
        let listed: BTreeSet<String> = env["NATS_URL"].split(',').map(str::to_owned).collect();
        assert_eq!(listed, urls, "{name}: every node in NATS_URL");
        if program != "dashboard" {
            let replicas = env.get("STREAM_REPLICAS").map(String::as_str);
            assert_eq!(
                replicas,
                Some("3"),
                "{name}: creates streams in three copies"
            );
        }
        for (node, _) in &nodes {
            assert_eq!(
                depends_on(service, node).as_deref(),
                Some("service_healthy"),
                "{name}: waits for {node}"
            );
        }
    }
}

/// No password in the compose file: each service reads its own identity from
/// the file the init service creates for it, as the user that owns it, and
/// every worker replica claims a worker identity of its own from the pool.
#[test]
fn compose_identities_come_from_the_init_service() {
    let services = compose();
    let dockerfile = read("Dockerfile");
    let identities = format!("{SECRETS}/identities");
    for (name, service) in &services {
        let name = name.as_str().unwrap();
        for (key, value) in env(service) {
            assert!(
                !key.contains("PASSWORD") && !value.contains("PASSWORD"),
                "{name}: `{key}` would put a password in the compose file or the environment"
            );
        }
    }

    for (name, program, service) in binaries(&services) {
        let env = env(service);
        match program.as_str() {
            "worker" => assert_eq!(
                env.get("NATS_IDENTITY_POOL"),
                Some(&identities),
                "{name}: claims a worker identity from the pool"
            ),
            _ => assert_eq!(
                env.get("NATS_IDENTITY_FILE"),
                Some(&format!("{identities}/{program}.env")),
                "{name}: reads its own identity file"
            ),
        }
        assert!(
            !env.contains_key("WORKER_ID"),
            "{name}: the id is the identity's name"
        );
        let user = format!("jetinfer-{program}");
        assert_eq!(
            service["user"].as_str(),
            Some(user.as_str()),
            "{name}: runs as the user that owns its identity file"
        );
        assert!(
            dockerfile.contains(&format!("--shell /usr/sbin/nologin {user}")),
            "Dockerfile: creates the user `{user}`"
        );
        assert!(
            volumes(service).contains(&("secrets".into(), SECRETS.into(), true)),
            "{name}: mounts the secrets volume read-only at {SECRETS}"
        );
        assert_eq!(
            depends_on(service, "nats").as_deref(),
            Some("service_healthy"),
            "{name}: starts once nats is healthy"
        );
    }

    // init: the launcher's secrets step, on the volume, giving each file to
    // its service's user (launcher/tests/up/compose_init.rs runs it for real).
    let init = service(&services, "init");
    assert_eq!(
        init["image"],
        service(&services, "gateway")["image"],
        "init: the jetinfer image"
    );
    assert_eq!(
        init["user"].as_str(),
        Some("root"),
        "init: chowns the identity files"
    );
    assert_eq!(
        init["restart"].as_str(),
        Some("no"),
        "init: runs once per `up`"
    );
    assert_eq!(strings(&init["entrypoint"]), ["launcher", "secrets"]);
    assert!(
        dockerfile.contains("target/release/launcher"),
        "Dockerfile: the image carries the launcher"
    );
    let init_env = env(init);
    assert_eq!(init_env.get("STATE_DIR").map(String::as_str), Some(SECRETS));
    assert_eq!(
        init_env.get("SECRETS_OWNERS").map(String::as_str),
        Some("true")
    );
    let mounts = volumes(init);
    assert!(
        mounts.contains(&("secrets".into(), SECRETS.into(), false)),
        "init: writes the secrets volume"
    );
    let (_, conf_target, _) = mounts
        .iter()
        .find(|(s, _, _)| s == "./nats.conf")
        .expect("init: mounts our nats.conf");
    assert_eq!(
        init_env.get("NATS_CONF"),
        Some(conf_target),
        "init reads nats.conf where it is mounted"
    );

    let nats = service(&services, "nats");
    let command = strings(&nats["command"]);
    let conf = command
        .windows(2)
        .find(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("nats: -c CONFIG");
    assert_eq!(
        conf,
        format!("{SECRETS}/nats-server/nats.conf"),
        "nats runs our nats.conf beside the access.conf init generates"
    );
    assert_eq!(
        depends_on(nats, "init").as_deref(),
        Some("service_completed_successfully"),
        "nats: starts once the identities exist"
    );
    assert!(
        volumes(nats).contains(&("secrets".into(), SECRETS.into(), true)),
        "nats: reads the secrets volume"
    );
}

/// Healthchecks probe the port the service really listens on; host ports are
/// published on 127.0.0.1; stopping is bounded; the Dockerfile needs no BuildKit.
#[test]
fn compose_healthchecks_ports_and_dockerfile() {
    let services = compose();
    for (name, program, service) in binaries(&services) {
        let env = env(service);
        let test = strings(&service["healthcheck"]["test"]).join(" ");
        let listen = match program.as_str() {
            "worker" => env
                .get("METRICS_LISTEN")
                .cloned()
                .unwrap_or("0.0.0.0:9100".into()),
            "gateway" => env["GATEWAY_LISTEN"].clone(),
            _ => env["DASHBOARD_LISTEN"].clone(),
        };
        let port = listen.rsplit(':').next().unwrap();
        assert!(
            test.contains(&format!("http://localhost:{port}/healthz")),
            "{name}: healthcheck `{test}` probes /healthz on {listen}"
        );
        assert!(
            service["stop_grace_period"].as_str().is_some(),
            "{name}: stop_grace_period"
        );
    }
    assert!(
        strings(&service(&services, "nats")["healthcheck"]["test"])
            .join(" ")
            .contains("/healthz?js-enabled-only=true"),
        "nats: healthy once JetStream is"
    );
    assert_eq!(
        depends_on(service(&services, "dashboard"), "nats").as_deref(),
        Some("service_healthy")
    );
    for (name, service) in &services {
        for port in strings(&service["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{}: `{port}` is published on every interface; bind it to 127.0.0.1",
                name.as_str().unwrap()
            );
        }
    }

    let dockerfile = read("Dockerfile");
    for line in dockerfile.lines() {
        assert!(
            !line.trim_start().starts_with("# syntax=") && !line.contains("--mount="),
            "Dockerfile: `{line}` needs BuildKit; Docker 20.10's classic builder must build it"
        );
    }
    assert!(
        dockerfile.contains("cargo chef cook"),
        "dependency layer cached by cargo-chef"
    );
    assert!(
        dockerfile.contains("ENV MODEL_DIR=/models/all-MiniLM-L6-v2"),
        "the image carries the model"
    );
    assert!(
        dockerfile.contains("ENV IMAGE_MODEL_DIR=/models/efficientnet-lite0"),
        "the image carries the image model"
    );
    for (_, _, service) in binaries(&services) {
        if let Some(dir) = env(service).get("MODEL_DIR") {
            assert_eq!(
                dir, "/models/all-MiniLM-L6-v2",
                "MODEL_DIR is the image's model"
            );
        }
    }
}
