//! docker-compose.yml must only use flags and env vars our binaries really have,
//! and run every one of them.

use clap::CommandFactory;
use jetinfer_dashboard::config::DashboardArgs;
use jetinfer_gateway::config::GatewayArgs;
use jetinfer_worker::config::WorkerArgs;
use serde_yaml::Value;
use std::collections::BTreeSet;

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

#[test]
fn compose_services_use_only_real_flags_and_env_vars() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml at the repo root");
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    doc.apply_merge().expect("merge keys resolve");
    let services = doc["services"].as_mapping().expect("services");

    let mut seen = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let command = strings(&service["command"]);
        let Some(program) = command.first() else {
            continue;
        };
        let (flags, envs) = match program.as_str() {
            "worker" => options(WorkerArgs::command()),
            "gateway" => options(GatewayArgs::command()),
            "dashboard" => options(DashboardArgs::command()),
            _ => continue,
        };
        seen.insert(program.clone());
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
    let workers = services
        .values()
        .filter(|s| strings(&s["command"]).first().map(String::as_str) == Some("worker"))
        .count();
    assert_eq!(workers, 3, "three workers");
    let nats = strings(&services[&Value::from("nats")]["command"]);
    assert!(
        nats.iter().any(|a| a.ends_with("nats.conf")),
        "nats runs our nats.conf"
    );
}
