use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How much of the server's certificate is checked (libpq's `sslmode` levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encryption only: any certificate is accepted (libpq's `require` without a root
    /// certificate). The handshake's signatures are still checked.
    Nothing,
    /// The certificate must chain to a trusted CA; its host name is not checked (`verify-ca`).
    Chain,
    /// The certificate must chain to a trusted CA and name the host connected to
    /// (`verify-full`, and what Kafka clients do by default).
    ChainAndHost,
}

/// PEM files and the settings that name them (for errors).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA certificates to trust; `None` (or the word `system`) means the system's roots.
    pub ca: Option<PathBuf>,
    pub ca_setting: &'static str,
    /// A client certificate (chain) and its key, for servers that authenticate clients by
    /// certificate. Both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_cert_setting: &'static str,
    pub client_key: Option<PathBuf>,
    pub client_key_setting: &'static str,
}

/// A TLS set-up that cannot work. Each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting} ({}): {reason}", .path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{setting} ({}) holds no PEM certificate", .path.display())]
    NoCertificate {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{setting} ({}): {reason}", .path.display())]
    BadCertificate {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("no CA certificates found in the system's store; set {setting} to a CA file")]
    NoSystemRoots { setting: &'static str },
    #[error("{cert} and {key} go together: set both or neither")]
    HalfClientAuth {
        cert: &'static str,
        key: &'static str,
    },
    #[error("the client certificate ({cert}) and key ({key}) do not fit together: {reason}")]
    ClientAuth {
        cert: &'static str,
        key: &'static str,
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration: TLS 1.2 and 1.3 on ring, the server verified as `verify`
/// says, a client certificate when `files` names one.
pub fn client_config(verify: Verify, files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
        Verify::Chain | Verify::ChainAndHost => {
            let roots = Arc::new(roots(files)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::BadCertificate {
                    setting: files.ca_setting,
                    path: files.ca.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
            if verify == Verify::Chain {
                Arc::new(IgnoreHostName(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::BadCertificate {
            setting: files.ca_setting,
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&files.client_cert, &files.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, files.client_cert_setting)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                setting: files.client_key_setting,
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::ClientAuth {
                    cert: files.client_cert_setting,
                    key: files.client_key_setting,
                    reason: e.to_string(),
                })
        }
        _ => Err(TlsError::HalfClientAuth {
            cert: files.client_cert_setting,
            key: files.client_key_setting,
        }),
    }
}

fn certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read {
        setting,
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            setting,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn roots(files: &TlsFiles) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match files.ca.as_deref().filter(|p| *p != Path::new("system")) {
        Some(path) => {
            for cert in certificates(path, files.ca_setting)? {
                store.add(cert).map_err(|e| TlsError::BadCertificate {
                    setting: files.ca_setting,
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            // Unreadable entries in the system store are skipped, as other clients do.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(TlsError::NoSystemRoots {
                    setting: files.ca_setting,
                });
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain is checked as usual; a certificate that is valid except for the host
/// name is accepted.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// libpq's `require` (and `prefer`) without a root certificate: encrypted, not authenticated.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
