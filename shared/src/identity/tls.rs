//! NATS over TLS without an outside CA: the secrets step makes a private CA,
//! signs one server certificate with it and throws the CA's key away, so no
//! one (not even a stolen state folder) can mint another certificate that
//! clients trust. Clients verify the server against `ca.pem` (`NATS_TLS_CA`).
//! Rotating means making all three again.

use super::env_file::write_private;
use super::IdentityError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Where the three files of a TLS setup live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate clients trust (public).
    pub ca: PathBuf,
    /// The server certificate, signed by the CA (public).
    pub cert: PathBuf,
    /// The server's private key (0600).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files in `dir`: `ca.pem`, `server-cert.pem`, `server-key.pem`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// All three are there.
    pub fn exist(&self) -> bool {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .all(|p| p.is_file())
    }

    /// Make a fresh CA and a server certificate valid for `hosts` (DNS names
    /// or IP addresses), replacing whatever was there.
    pub fn create(&self, hosts: &[&str]) -> Result<(), IdentityError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "jetinfer private NATS CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "jetinfer nats-server");
        server.use_authority_key_identifier_extension = true;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &issuer)?;

        if let Some(dir) = self.ca.parent() {
            std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        write_private(&self.key, server_key.serialize_pem().as_bytes())?;
        write_public(&self.cert, server_cert.pem().as_bytes())?;
        write_public(&self.ca, ca_cert.pem().as_bytes())
    }
}

/// A certificate: private writing (temporary file, rename), then readable by all.
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    write_private(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(
            |source| IdentityError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_and_a_server_certificate_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(&dir.path().join("tls"));
        assert!(!files.exist());
        files.create(&["localhost", "127.0.0.1"]).unwrap();
        assert!(files.exist());
        let ca = std::fs::read_to_string(&files.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }
}
