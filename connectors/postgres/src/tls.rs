//! TLS to PostgreSQL, with libpq's `sslmode` meanings, for both kinds of
//! session (SQL through tokio-postgres, replication through
//! pgwire-replication), on rustls.
//!
//! * `disable`: plain TCP. `prefer` (libpq's default): TLS when the server
//!   offers it, unverified, else plain.
//! * `require`: TLS, the certificate is not verified (libpq does the same
//!   unless a root certificate is given: then as `verify-ca`).
//! * `verify-ca`: TLS, the chain must lead to a trusted root.
//! * `verify-full`: and the certificate must name the host.
//!
//! Trusted roots: the PEM file in `sslrootcert`, else the Mozilla roots
//! (webpki-roots). A client certificate (`sslcert`, with its key in
//! `sslkey`, PEM: PKCS#8, PKCS#1 or SEC1) is presented on both sessions, for
//! servers whose `pg_hba.conf` says `cert` or `clientcert=verify-full`. Unlike
//! libpq, nothing is read from `~/.postgresql/` unless named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use connector_core::{ConnectorError, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// The client certificate chain and its private key (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
    /// `key=value` form); returns the rest, for tokio-postgres, with
    /// `sslmode` set to what it understands.
    pub fn extract(conn: &str) -> Result<(String, TlsSettings), ConnectorError> {
        let (rest, mode) = take_param(conn, "sslmode");
        let (rest, root) = take_param(&rest, "sslrootcert");
        let (rest, cert) = take_param(&rest, "sslcert");
        let (mut rest, key) = take_param(&rest, "sslkey");
        let root_cert = root.map(PathBuf::from);
        let client_cert =
            match (cert, key) {
                (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
                (None, None) => None,
                (Some(_), None) | (None, Some(_)) => return Err(ConnectorError::permanent(
                    Stage::Connect,
                    "sslcert and sslkey go together: name both the client certificate and its key",
                )),
            };
        let mode = match mode.as_deref() {
            None | Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("allow") => SslMode::Prefer,
            // libpq: `require` with a root certificate verifies the chain.
            Some("require") if root_cert.is_some() => SslMode::VerifyCa,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(ConnectorError::permanent(
                    Stage::Connect,
                    format!("sslmode={other}: expected disable, allow, prefer, require, verify-ca or verify-full"),
                ))
            }
        };
        let pg_mode = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        };
        rest = add_param(&rest, "sslmode", pg_mode);
        if client_cert.is_some() && mode == SslMode::Disable {
            return Err(ConnectorError::permanent(
                Stage::Connect,
                "sslcert with sslmode=disable: a client certificate needs TLS",
            ));
        }
        Ok((
            rest,
            TlsSettings {
                mode,
                root_cert,
                client_cert,
            },
        ))
    }

    /// The rustls configuration for tokio-postgres.
    pub fn client_config(&self) -> Result<ClientConfig, ConnectorError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS setup: {e}")))?;
        let roots = Arc::new(self.roots()?);
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::VerifyFull => WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| tls_error(format!("TLS setup: {e}")))?,
            SslMode::VerifyCa => Arc::new(ChainOnly {
                inner: WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| tls_error(format!("TLS setup: {e}")))?,
            }),
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(Unverified { provider })
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let (chain, key) = load_client_cert(cert, key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(format!("sslcert {}: {e}", cert.display())))
            }
        }
    }

    /// The same settings for the replication session.
    pub fn replication(&self) -> pgwire_replication::TlsConfig {
        use pgwire_replication::TlsConfig;
        let root = self.root_cert.clone();
        let config = match self.mode {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => TlsConfig {
                mode: pgwire_replication::SslMode::Prefer,
                ..TlsConfig::disabled()
            },
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyCa => TlsConfig::verify_ca(root),
            SslMode::VerifyFull => TlsConfig::verify_full(root),
        };
        match &self.client_cert {
            Some((cert, key)) => config.with_client_cert(cert, key),
            None => config,
        }
    }

    fn roots(&self) -> Result<RootCertStore, ConnectorError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| tls_error(format!("sslrootcert {}: {e}", path.display())))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(format!(
                        "sslrootcert {}: no certificate in it",
                        path.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
}

/// The client certificate chain and key from their PEM files, with errors
/// that name the file.
fn load_client_cert(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConnectorError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("sslcert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(tls_error(format!(
            "sslcert {}: no certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error(format!("sslkey {}: {e}", key.display())))?;
    Ok((chain, key))
}

fn tls_error(message: String) -> ConnectorError {
    ConnectorError::permanent(Stage::Connect, message)
}

/// Removes `key=value` from a URL query or a `key=value …` string.
fn take_param(conn: &str, key: &str) -> (String, Option<String>) {
    if conn.contains("://") {
        let Some((base, query)) = conn.split_once('?') else {
            return (conn.to_string(), None);
        };
        let mut value = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| match p.split_once('=') {
                Some((k, v)) if k == key => {
                    value = Some(v.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, value)
    } else {
        let mut value = None;
        // libpq allows spaces around `=` (`sslmode = verify-full`): joined
        // first, or the setting would be missed and TLS left unverified.
        let conn = tight_equals(conn);
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|p| match p.split_once('=') {
                Some((k, v)) if k.trim() == key => {
                    value = Some(v.trim_matches('\'').to_string());
                    false
                }
                _ => true,
            })
            .collect();
        (kept.join(" "), value)
    }
}

/// A `key = value` string with the spaces around each `=` (outside quoted
/// values) removed.
fn tight_equals(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut quoted = false;
    let mut chars = conn.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && c.is_whitespace() {
            // Skip spaces before an `=`.
            let mut lookahead = chars.clone();
            while lookahead.peek().is_some_and(|n| n.is_whitespace()) {
                lookahead.next();
            }
            if lookahead.peek() == Some(&'=') {
                chars = lookahead;
                continue;
            }
        }
        out.push(c);
        if !quoted && c == '=' {
            while chars.peek().is_some_and(|n| n.is_whitespace()) {
                chars.next();
            }
        }
    }
    out
}

fn add_param(conn: &str, key: &str, value: &str) -> String {
    if conn.contains("://") {
        let sep = if conn.contains('?') { '&' } else { '?' };
        format!("{conn}{sep}{key}={value}")
    } else {
        format!("{conn} {key}={value}")
    }
}

/// `verify-ca`: the chain must be trusted; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

/// `require` / `prefer`: encrypted, the certificate not verified (the
/// handshake signatures still are).
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_around_equals_do_not_hide_the_sslmode() {
        let (rest, t) =
            TlsSettings::extract("host=db sslmode = verify-full sslrootcert =/ca.pem dbname = hq")
                .unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(
            rest.contains("dbname=hq") && !rest.contains("verify-full"),
            "{rest}"
        );
        assert_eq!(
            tight_equals("password = 'a = b' host=h"),
            "password='a = b' host=h"
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_from_both_forms() {
        let (rest, t) = TlsSettings::extract(
            "postgres://u:p@db/hq?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db/hq?application_name=x&sslmode=require"
        );
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, t) = TlsSettings::extract("host=db dbname=hq sslmode=require").unwrap();
        assert_eq!(rest, "host=db dbname=hq sslmode=require");
        assert_eq!(t.mode, SslMode::Require);
        let (_, t) = TlsSettings::extract("postgres://db/hq").unwrap();
        assert_eq!(t.mode, SslMode::Prefer, "libpq's default");
        let (_, t) =
            TlsSettings::extract("postgres://db/hq?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            t.mode,
            SslMode::VerifyCa,
            "require with a root verifies the chain"
        );
        assert!(TlsSettings::extract("postgres://db/hq?sslmode=sometimes").is_err());
        let (rest, t) =
            TlsSettings::extract("host=db sslmode=verify-full sslcert=/c.pem sslkey='/c.key'")
                .unwrap();
        assert_eq!(rest, "host=db sslmode=require");
        assert_eq!(
            t.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/c.key")))
        );
        let half = TlsSettings::extract("postgres://db/hq?sslcert=/c.pem").unwrap_err();
        assert!(half.message.contains("sslkey"), "{}", half.message);
        assert!(
            TlsSettings::extract("postgres://db/hq?sslmode=disable&sslcert=/c&sslkey=/k").is_err()
        );
    }
}
