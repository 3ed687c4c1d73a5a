//! HTTPS: the certificate (the operator's, an uploaded one, or a self-signed one generated on
//! first start) and a resolver that lets an upload take effect without a restart. The listener
//! that does the handshakes is in [`super::listener`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("certificate: {0}")]
    Invalid(String),
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
    #[error(
        "the certificate is configured in web.tls_cert/web.tls_key; replace those files or remove the settings"
    )]
    OperatorManaged,
}

/// The web certificate and where it lives.
pub struct WebTls {
    resolver: Arc<Resolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Set in the config file: uploads are refused (the file is the operator's).
    operator: bool,
    fingerprint: RwLock<String>,
}

#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of the DER certificate as colon-separated hex (what browsers show).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses and checks a PEM chain and key; returns the signing key and the leaf fingerprint.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<(CertifiedKey, String), TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("cert_pem: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Invalid(
            "cert_pem: no CERTIFICATE block found".into(),
        ));
    };
    let fp = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Invalid(format!("key_pem: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid(format!("key_pem: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        TlsError::Invalid(format!("the key does not belong to the certificate ({e})"))
    })?;
    Ok((ck, fp))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to `path` atomically with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(mode);
    let mut f = opts.open(&tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    names: Vec<String>,
) -> Result<(), TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Ironbridge gateway (self-signed)",
    );
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let file_err = |path: &Path, e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| file_err(key_path, e))?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644).map_err(|e| file_err(cert_path, e))?;
    Ok(())
}

impl WebTls {
    /// The configured certificate, else `<state_dir>/tls/web.{crt,key}`, generated (self-signed,
    /// for the host name, `localhost` and the listen address) when absent. Logs the fingerprint.
    pub fn load_or_generate(config: &Config) -> Result<WebTls, TlsError> {
        let (cert_path, key_path, operator) = match (&config.web.tls_cert, &config.web.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), true),
            _ => {
                let dir = config.gateway.state_dir.join("tls");
                (dir.join("web.crt"), dir.join("web.key"), false)
            }
        };
        if !(operator || cert_path.exists() && key_path.exists()) {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                let h = h.trim().to_string();
                if !h.is_empty() && !names.contains(&h) {
                    names.push(h);
                }
            }
            let ip = config.web.listen.ip();
            if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
            let dir = cert_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            generate(&dir, &cert_path, &key_path, names.clone())?;
            tracing::info!(cert = %cert_path.display(), names = ?names, "generated a self-signed web certificate");
        }
        let (ck, fp) =
            certified_key(&read(&cert_path)?, &read(&key_path)?).map_err(|e| match e {
                TlsError::Invalid(m) => TlsError::File {
                    path: cert_path.clone(),
                    reason: m,
                },
                other => other,
            })?;
        tracing::info!(
            cert = %cert_path.display(),
            fingerprint_sha256 = %fp,
            "web TLS certificate (compare this fingerprint with the one your browser shows)"
        );
        Ok(WebTls {
            resolver: Arc::new(Resolver(RwLock::new(Arc::new(ck)))),
            cert_path,
            key_path,
            operator,
            fingerprint: RwLock::new(fp),
        })
    }

    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn is_operator_managed(&self) -> bool {
        self.operator
    }

    /// Checks an uploaded chain and key, stores them (key mode 0600) and serves them from the
    /// next handshake on. Returns the new fingerprint.
    pub fn install(&self, cert_pem: &str, key_pem: &str) -> Result<String, TlsError> {
        if self.operator {
            return Err(TlsError::OperatorManaged);
        }
        let (ck, fp) = certified_key(cert_pem.as_bytes(), key_pem.as_bytes())?;
        let file_err = |path: &Path, e: std::io::Error| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.cert_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        write_file(&self.key_path, key_pem.as_bytes(), 0o600)
            .map_err(|e| file_err(&self.key_path, e))?;
        write_file(&self.cert_path, cert_pem.as_bytes(), 0o644)
            .map_err(|e| file_err(&self.cert_path, e))?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = fp.clone();
        tracing::info!(cert = %self.cert_path.display(), fingerprint_sha256 = %fp, "web TLS certificate replaced");
        Ok(fp)
    }

    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_a_private_key_and_accepts_uploads() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = Config::default();
        c.gateway.state_dir = dir.path().to_path_buf();
        let t = WebTls::load_or_generate(&c).expect("generate");
        let key = dir.path().join("tls/web.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let fp = t.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        // Second start: same certificate.
        let again = WebTls::load_or_generate(&c).expect("load");
        assert_eq!(again.fingerprint(), fp);

        let other = rcgen::generate_simple_self_signed(vec!["box.plant".to_string()]).expect("gen");
        let new_fp = t
            .install(&other.cert.pem(), &other.key_pair.serialize_pem())
            .expect("install");
        assert_eq!(new_fp, fingerprint(other.cert.der()));
        assert_ne!(new_fp, fp);
        let third = rcgen::generate_simple_self_signed(vec!["x".to_string()]).expect("gen");
        assert!(
            t.install(&other.cert.pem(), &third.key_pair.serialize_pem())
                .is_err(),
            "mismatched key accepted"
        );
        assert!(t.install("junk", "junk").is_err());
    }
}
