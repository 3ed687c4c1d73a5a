//! rustls client configuration for the Kafka connection (ring provider, as rskafka uses).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{ConfigError, TlsConfig};

fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}

/// Builds the rustls client config from `[kafka.tls]`. Errors name the field.
pub fn client_config(cfg: &TlsConfig) -> Result<Arc<ClientConfig>, ConfigError> {
    client_config_for(cfg, "kafka.tls")
}

/// Builds a rustls client config (ring provider) from TLS settings found in the table
/// `section` (e.g. `sparkplug.upstream`), which errors name.
pub fn client_config_for(cfg: &TlsConfig, section: &str) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            for cert in read_certs(path, &format!("{section}.ca_file"))? {
                roots.add(cert).map_err(|e| {
                    ConfigError::new(
                        format!("{section}.ca_file"),
                        format!("{}: {e}", path.display()),
                    )
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ConfigError::new(
                    format!("{section}.ca_file"),
                    "no CA file given and the system trust store holds no usable certificate",
                ));
            }
        }
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| ConfigError::new(format!("{section}.ca_file"), e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &cfg.server_name {
        Some(name) => Arc::new(FixedName {
            inner: webpki,
            name: ServerName::try_from(name.clone()).map_err(|e| {
                ConfigError::new(format!("{section}.server_name"), format!("{name:?}: {e}"))
            })?,
        }),
        None => webpki,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(section, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, &format!("{section}.cert_file"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ConfigError::new(
                    format!("{section}.key_file"),
                    format!("{}: {e}", key.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::new(format!("{section}.key_file"), e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ConfigError::new(
                format!("{section}.key_file"),
                "cert_file and key_file must be given together",
            ));
        }
    };
    Ok(Arc::new(config))
}

/// Verifies the broker certificate against a configured name instead of the dialled host.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TlsConfig {
            enabled: true,
            ca_file: Some(dir.path().join("nope.pem")),
            ..Default::default()
        };
        let e = client_config(&cfg).expect_err("missing file");
        assert_eq!(e.field, "kafka.tls.ca_file");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").expect("write");
        let cfg = TlsConfig {
            enabled: true,
            ca_file: Some(empty),
            ..Default::default()
        };
        let e = client_config(&cfg).expect_err("empty file");
        assert!(e.message.contains("no PEM certificate"), "{e}");
    }
}
