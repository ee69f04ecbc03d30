//! TLS for the SMTP listeners: a PEM certificate chain and key become a rustls
//! `ServerConfig` (TLS 1.2 and 1.3, rustls's defaults, the ring provider), held by [`Tls`],
//! which reloads the pair when its files change.
//!
//! Certificates are renewed by replacing their files (often by rename). [`Tls::watch`] polls
//! the files' identity (inode, size, modification time); when they change, the pair is read
//! again, and only a pair that loads and matches replaces the current one. A bad pair is
//! refused with a log line and the connections keep the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig, ServerConnection};

/// How often [`Tls::watch`] looks at the files when the server runs it.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate pair that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("cannot make a certificate for {hostname}: {source}")]
    Generate {
        hostname: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the certificate {cert} and the key {key} cannot serve: {source}")]
    Pair {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
}

/// What the TLS layer of a connection negotiated, for the `Received:` header (RFC 3848).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The cipher suite's IANA name as rustls spells it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

impl TlsInfo {
    /// What `connection` negotiated (its handshake complete).
    pub fn of(connection: &ServerConnection) -> TlsInfo {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .map(|suite| {
                let suite = suite.suite();
                suite
                    .as_str()
                    .map_or_else(|| format!("{suite:?}"), str::to_owned)
            })
            .unwrap_or_else(|| "unknown".to_owned());
        TlsInfo { version, cipher }
    }
}

/// Reads the PEM chain at `cert` (leaf first) and the PEM key at `key` and builds the
/// server configuration: TLS 1.2 and 1.3, no client certificates. The key must match the
/// leaf certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block in the file".to_owned()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let pair_error = |source| TlsError::Pair {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(pair_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(pair_error)?;
    Ok(Arc::new(config))
}

/// A self-signed development pair for `hostname` (a DNS name or an IP address, as the
/// subject alternative name and common name): the PEM certificate and the PEM key.
pub fn self_signed(hostname: &str) -> Result<(String, String), TlsError> {
    let generate = || -> Result<(String, String), rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hostname);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    generate().map_err(|source| TlsError::Generate {
        hostname: hostname.to_owned(),
        source,
    })
}

/// The identity of the two files: a change in any part means they were replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The current certificate pair, reloaded when its files change.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
    /// The files as last looked at (loaded or refused), so a bad pair is reported once.
    seen: Mutex<Stamp>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair; an error when it cannot serve.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let stamp = Stamp {
            cert: file_stamp(cert),
            key: file_stamp(key),
        };
        let config = server_config(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            acceptor: RwLock::new(TlsAcceptor::from(config)),
            seen: Mutex::new(stamp),
        }))
    }

    /// The acceptor for a new connection: the pair current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the pair again if its files changed since they were last looked at. Returns
    /// true when a new pair was loaded; a pair that cannot serve is logged and the current
    /// one stays.
    pub fn reload_if_changed(&self) -> bool {
        let now = Stamp {
            cert: file_stamp(&self.cert),
            key: file_stamp(&self.key),
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self
                    .acceptor
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = TlsAcceptor::from(config);
                tracing::info!(
                    cert = %self.cert.display(), key = %self.key.display(),
                    "TLS certificate reloaded"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS certificate refused; the previous one stays in use");
                false
            }
        }
    }

    /// Looks at the files every `interval` until the last other holder of this `Tls` is
    /// gone.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let tls: Weak<Tls> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                // Two small files: read where the task runs.
                tls.reload_if_changed();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    #[test]
    fn a_pair_loads_and_a_mismatched_or_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("relay.test").unwrap();
        let (_, other_key) = self_signed("relay.test").unwrap();
        let cert_path = write(dir.path(), "relay.crt", &cert);
        let key_path = write(dir.path(), "relay.key", &key);
        server_config(&cert_path, &key_path).unwrap();

        let other = write(dir.path(), "other.key", &other_key);
        assert!(matches!(
            server_config(&cert_path, &other),
            Err(TlsError::Pair { .. })
        ));
        let junk = write(dir.path(), "junk", "not PEM");
        assert!(matches!(
            server_config(&junk, &key_path),
            Err(TlsError::Cert { .. })
        ));
        assert!(matches!(
            server_config(&cert_path, &junk),
            Err(TlsError::Key { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(server_config(&missing, &key_path).is_err());
    }

    #[test]
    fn reload_takes_a_good_replacement_and_keeps_the_pair_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("relay.test").unwrap();
        let cert_path = write(dir.path(), "relay.crt", &cert);
        let key_path = write(dir.path(), "relay.key", &key);
        let tls = Tls::load(&cert_path, &key_path).unwrap();
        assert!(!tls.reload_if_changed(), "nothing changed");

        let (cert2, key2) = self_signed("relay.test").unwrap();
        write(dir.path(), "relay.crt", &cert2);
        // The certificate alone: it does not match the key, so it is refused...
        assert!(!tls.reload_if_changed());
        // ...until the key follows.
        write(dir.path(), "relay.key", &key2);
        assert!(tls.reload_if_changed());
        assert!(!tls.reload_if_changed());

        // A broken key is refused once (and logged once), not at every look.
        write(dir.path(), "relay.key", "junk");
        assert!(!tls.reload_if_changed());
        assert!(!tls.reload_if_changed());
    }
}
