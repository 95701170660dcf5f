//! Compose's `init` service runs `launcher secrets` with the environment
//! docker-compose.yml gives it; run exactly that here (on a temporary folder
//! instead of the volume) and check it makes what the other services read:
//! the identity files, the worker pool, and a nats-server config that loads.

use crate::harness::LAUNCHER;
use jetinfer_shared::identity::{env_file, pool};
use jetinfer_testsupport::{nats_server_bin, repo_nats_conf};
use std::process::Command;

/// The init service's environment, from docker-compose.yml (with
/// `${VAR:-default}` taken at its default).
fn init_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .expect("docker-compose.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let env = doc["services"]["init"]["environment"]
        .as_mapping()
        .expect("init: environment map");
    env.iter()
        .map(|(k, v)| {
            let v = v.as_str().expect("string values").to_owned();
            let v = match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(expr) => expr.split_once(":-").expect("${VAR:-default}").1.to_owned(),
                None => v,
            };
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[test]
fn the_compose_init_service_makes_what_the_services_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = init_env();
    let workers: usize = env
        .iter()
        .find(|(k, _)| k == "WORKERS")
        .map(|(_, v)| v.parse().expect("WORKERS is a number"))
        .expect("init: WORKERS");
    assert!(
        workers >= 3,
        "the pool holds at least the three default replicas"
    );
    // The volume is a temporary folder here, nats.conf the repository's, and
    // the service users of the image do not exist on this machine.
    for (key, value) in env.iter_mut() {
        match key.as_str() {
            "STATE_DIR" => *value = dir.path().display().to_string(),
            "NATS_CONF" => *value = repo_nats_conf().display().to_string(),
            "SECRETS_OWNERS" => *value = "false".into(),
            _ => {}
        }
    }
    let run = |extra: &[&str]| {
        let out = Command::new(LAUNCHER)
            .arg("secrets")
            .args(extra)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("launcher secrets runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "launcher secrets: {text}");
        text
    };
    run(&[]);

    let ids = dir.path().join("identities");
    let gateway = env_file::read(&ids.join("gateway.env")).expect("gateway.env");
    env_file::read(&ids.join("dashboard.env")).expect("dashboard.env");
    env_file::read(&ids.join("admin.env")).expect("admin.env");
    let claims: Vec<_> = (0..workers)
        .map(|_| pool::claim(&ids).expect("a worker identity"))
        .collect();
    assert_eq!(
        claims[workers - 1].identity.name,
        format!("worker-{workers}")
    );
    assert!(
        pool::claim(&ids).is_err(),
        "the pool holds exactly WORKERS identities"
    );

    // The config nats-server is started on loads (our nats.conf + access.conf).
    let conf = dir.path().join("nats-server/nats.conf");
    let check = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .output()
        .expect("nats-server -t");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A second `up` keeps every password; --rotate replaces them.
    run(&[]);
    assert_eq!(env_file::read(&ids.join("gateway.env")).unwrap(), gateway);
    let said = run(&["--rotate"]);
    assert!(said.contains("rotated"), "{said}");
    assert_ne!(env_file::read(&ids.join("gateway.env")).unwrap(), gateway);
}
