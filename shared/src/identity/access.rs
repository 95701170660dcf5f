//! `access.conf`: the part of nats-server's configuration that says who may
//! connect and how, generated from the identities. Our `nats.conf` ends with
//! `include "access.conf"`, so a server started on `nats.conf` without the
//! generated file beside it refuses to start: it can never run open.

use super::permissions::{self, Permissions};
use super::Identity;
use std::fmt::Write;
use std::path::Path;

/// The file name `nats.conf` includes.
pub const FILE_NAME: &str = "access.conf";

/// Server certificate and key, for a `tls` block.
#[derive(Debug, Clone)]
pub struct ServerTls<'a> {
    /// PEM certificate chain of the server.
    pub cert: &'a Path,
    /// PEM private key of the server.
    pub key: &'a Path,
}

/// The `authorization` block (every identity with its password and
/// permissions) and, with `tls`, a `tls` block that makes every client
/// connection TLS. Passwords are written inline: the file must be private to
/// nats-server (the writers make it 0600).
pub fn render(identities: &[Identity], tls: Option<ServerTls<'_>>) -> String {
    let mut out = String::from(
        "# Generated from the NATS identities: do not edit; re-run the secrets step.\n\
         # (`./jetinfer secrets`, the compose init service, or the test harness.)\n\n",
    );
    if let Some(tls) = tls {
        let _ = writeln!(
            out,
            "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 5\n}}\n",
            quote(&tls.cert.display().to_string()),
            quote(&tls.key.display().to_string())
        );
    }
    out.push_str("authorization {\n  users = [\n");
    for identity in identities {
        let perms = permissions::of(identity.role(), &identity.name);
        let _ = write!(
            out,
            "    {{ user: {}, password: {}",
            quote(&identity.name),
            quote(identity.password.expose())
        );
        if perms != Permissions::default() {
            out.push_str(", permissions: {\n");
            out.push_str(&block(&perms));
            out.push_str("    }");
        }
        out.push_str(" }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

/// A `permissions` map's contents.
fn block(p: &Permissions) -> String {
    let mut out = String::new();
    let mut publish = Vec::new();
    if let Some(allow) = &p.publish_allow {
        publish.push(format!("allow: {}", list(allow)));
    }
    if !p.publish_deny.is_empty() {
        publish.push(format!("deny: {}", list(&p.publish_deny)));
    }
    if !publish.is_empty() {
        let _ = writeln!(out, "        publish: {{ {} }}", publish.join(", "));
    }
    if let Some(allow) = &p.subscribe_allow {
        let _ = writeln!(out, "        subscribe: {{ allow: {} }}", list(allow));
    }
    if p.allow_responses {
        out.push_str("        allow_responses: true\n");
    }
    out
}

fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A double-quoted config string (nats-server's config reads `\\` and `\"`).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_is_a_user_with_its_own_permissions() {
        let ids: Vec<Identity> = ["admin", "gateway", "worker-1", "worker-2"]
            .into_iter()
            .map(|n| Identity::generate(n).unwrap())
            .collect();
        let conf = render(&ids, None);
        for id in &ids {
            assert!(conf.contains(&format!("user: \"{}\"", id.name)), "{conf}");
            assert!(conf.contains(id.password.expose()));
        }
        assert!(conf.contains("\"$KV.INFER_WORKERS.worker-1\""));
        assert!(conf.contains("\"$KV.INFER_WORKERS.worker-2\""));
        assert!(!conf.contains("tls {"));
        let tls = ServerTls {
            cert: Path::new("/s/server.pem"),
            key: Path::new("/s/server-key.pem"),
        };
        assert!(render(&ids, Some(tls)).contains("cert_file: \"/s/server.pem\""));
    }
}
