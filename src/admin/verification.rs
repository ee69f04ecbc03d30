//! Identity verification, as SES does it.
//!
//! - An email address created through the API gets a message with a link. The link carries
//!   an HMAC-signed token: the address, the nonce kept with the identity in the file
//!   (`verification_token`) and the moment the link expires (`link_ttl` after it was sent).
//!   Opening it verifies the address, if the identity still holds that nonce: a link sent
//!   for an identity that was since deleted and created again verifies nothing.
//! - A domain is verified when the TXT record `_amazonses.<domain>` holds its token (shown
//!   by get-email-identity in `DkimAttributes.Tokens`), looked up through hickory-resolver.
//!
//! The HMAC key comes from `[verification] secret_env`, or is generated once and kept beside
//! the configuration file (`<name>.verification-key`, mode 0600).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hmac::{Hmac, Mac};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message, SinglePart};
use sha2::Sha256;

use crate::config::Config;

type HmacSha256 = Hmac<Sha256>;

/// Signs every link; changing it would make links of another key forgeable across uses.
const DOMAIN_SEPARATOR: &[u8] = b"sesrelay email-address verification v1\n";

#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error("cannot read or create the verification key {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the verification key {path} is not the hex of 32 bytes")]
    BadKey { path: String },
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// Why a verification link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("This verification link is not valid.")]
    Malformed,
    #[error("This verification link is not valid: its signature does not match.")]
    Tampered,
    #[error("This verification link has expired. Create the identity again to get a new one.")]
    Expired,
    #[error(
        "This verification link is no longer valid: the identity was created again since it was sent."
    )]
    Superseded,
}

pub struct Verifier {
    key: Vec<u8>,
    resolver: TokioResolver,
}

impl Verifier {
    pub fn new(config: &Config) -> Result<Verifier, VerificationError> {
        let key = match &config.verification.secret {
            Some(secret) => secret.clone(),
            None => load_or_create_key(&key_path(&config.path))?,
        };
        let mut builder = match config.verification.dns_resolver {
            Some(addr) => TokioResolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    vec![],
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            None => TokioResolver::builder_tokio()
                .map_err(|e| VerificationError::Resolver(e.to_string()))?,
        };
        let options = builder.options_mut();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        // SES looks again until the record appears: no negative caching here.
        options.cache_size = 0;
        Ok(Verifier {
            key,
            resolver: builder.build(),
        })
    }

    /// A token for `identity` (created with `nonce`) that expires at `expires`.
    pub fn token(&self, identity: &str, nonce: &str, expires: SystemTime) -> String {
        let expiry = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let payload = format!("{expiry}:{nonce}:{identity}");
        let signature = self.sign(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// The identity a token verifies and its nonce, if it is genuine and not expired at
    /// `now`.
    pub fn check(&self, token: &str, now: SystemTime) -> Result<(String, String), LinkError> {
        let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&signature)
            .map_err(|_| LinkError::Tampered)?;
        let payload = String::from_utf8(payload).map_err(|_| LinkError::Malformed)?;
        let (expiry, rest) = payload.split_once(':').ok_or(LinkError::Malformed)?;
        let (nonce, identity) = rest.split_once(':').ok_or(LinkError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| LinkError::Malformed)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= expiry {
            return Err(LinkError::Expired);
        }
        Ok((identity.to_owned(), nonce.to_owned()))
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(DOMAIN_SEPARATOR);
        mac
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    /// The verification message for `address` (created with `nonce`), sent at `now`, as
    /// the upstream gets it.
    pub fn message(
        &self,
        config: &Config,
        address: &str,
        nonce: &str,
        now: SystemTime,
    ) -> Option<Vec<u8>> {
        let admin = config.admin.as_ref()?;
        let ttl = config.verification.link_ttl;
        let link = format!(
            "{}/verify?token={}",
            admin.public_url,
            self.token(address, nonce, link_expiry(now, ttl))
        );
        let region = &config.policy.region;
        let text = format!(
            "Dear sesrelay user,\r\n\r\n\
             We have received a request to authorize this email address for use with \
             sesrelay in region {region}. If you requested this verification, please go to \
             the following URL to confirm that you are authorized to use this email address:\r\n\r\n\
             {link}\r\n\r\n\
             Your request will not be processed unless you confirm the address using this \
             URL. This link expires {} after your original verification request.\r\n\r\n\
             If you did NOT request to verify this email address, do not click on the link.\r\n",
            spoken(ttl)
        );
        let from: Mailbox = config.verification.sender.parse().ok()?;
        let to: Mailbox = address.parse().ok()?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(format!(
                "Email Address Verification Request in region {region}"
            ))
            .date(now)
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::now_v7().simple(),
                config.server.hostname
            )))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(seven_bit(text)?),
            )
            .ok()?;
        Some(message.formatted())
    }

    /// Whether TXT `_amazonses.<domain>` holds `token`.
    pub async fn domain_has_token(&self, domain: &str, token: &str) -> bool {
        let name = format!("_amazonses.{}.", domain.trim_end_matches('.'));
        match self.resolver.txt_lookup(name.as_str()).await {
            Ok(lookup) => lookup.iter().any(|txt| {
                let value: Vec<u8> = txt
                    .txt_data()
                    .iter()
                    .flat_map(|p| p.iter().copied())
                    .collect();
                value == token.as_bytes()
            }),
            Err(e) => {
                tracing::debug!(%name, error = %e, "TXT lookup found no token");
                false
            }
        }
    }
}

/// When a link sent at `now` expires: `ttl` later, or as late as the clock goes when that
/// overflows (a huge `link_ttl` means "never", not a panic).
fn link_expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX) * 100)))
        .unwrap_or(now)
}

/// "24 hours", "90 minutes", "45 seconds".
fn spoken(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `text` as a 7bit body, so that the link stays whole and readable in the raw message
/// (lettre would pick quoted-printable for lines over 76 characters). `None` if the text
/// is not 7bit: non-ASCII, a bare CR or LF, or a line over 998 octets.
fn seven_bit(text: String) -> Option<Body> {
    let lines_ok = text
        .split("\r\n")
        .all(|line| line.len() <= 998 && !line.contains(['\r', '\n']));
    (text.is_ascii() && lines_ok && !text.contains('\0'))
        .then(|| Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::SevenBit))
}

/// `config/sesrelay.toml` → `config/sesrelay.verification-key`.
pub fn key_path(config_path: &Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sesrelay".to_owned());
    config_path.with_file_name(format!("{stem}.verification-key"))
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>, VerificationError> {
    let io_error = |source| VerificationError::Key {
        path: path.display().to_string(),
        source,
    };
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(hex::encode(key).as_bytes())
                .map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            tracing::info!(path = %path.display(), "generated the verification key");
            Ok(key.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io_error)?;
            match hex::decode(text.trim()) {
                Ok(bytes) if bytes.len() == 32 => Ok(bytes),
                _ => Err(VerificationError::BadKey {
                    path: path.display().to_string(),
                }),
            }
        }
        Err(e) => Err(io_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_ttl_never_overflows() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            link_expiry(now, Duration::from_secs(60)),
            now + Duration::from_secs(60)
        );
        for ttl in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let expiry = link_expiry(now, ttl);
            assert!(expiry > now + Duration::from_secs(100 * 365 * 86_400));
        }
        let _ = spoken(Duration::MAX);
    }

    fn verifier(key: &[u8]) -> Verifier {
        Verifier {
            key: key.to_vec(),
            resolver: TokioResolver::builder_with_config(
                ResolverConfig::default(),
                TokioConnectionProvider::default(),
            )
            .build(),
        }
    }

    #[test]
    fn links_verify_until_they_expire() {
        let v = verifier(b"0123456789abcdef0123456789abcdef");
        let sent = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = v.token("joe@example.com", "n1", sent + Duration::from_secs(86_400));
        let genuine = Ok(("joe@example.com".to_owned(), "n1".to_owned()));
        assert_eq!(v.check(&token, sent), genuine);
        assert_eq!(v.check(&token, sent + Duration::from_secs(86_399)), genuine);
        assert_eq!(
            v.check(&token, sent + Duration::from_secs(86_400)),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn tampered_links_are_refused() {
        let v = verifier(b"0123456789abcdef0123456789abcdef");
        let sent = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = v.token("joe@example.com", "n1", sent + Duration::from_secs(60));
        let (payload, signature) = token.split_once('.').unwrap();
        // Another identity, or a later expiry, under the same signature.
        for forged in [
            format!(
                "{}.{signature}",
                URL_SAFE_NO_PAD.encode("1800000060:eve@example.com")
            ),
            format!(
                "{}.{signature}",
                URL_SAFE_NO_PAD.encode("9999999999:joe@example.com")
            ),
        ] {
            assert_eq!(v.check(&forged, sent), Err(LinkError::Tampered));
        }
        // Signed with another key.
        let other = verifier(b"another key, another key, another");
        assert_eq!(other.check(&token, sent), Err(LinkError::Tampered));
        for junk in [
            "",
            ".",
            "abc",
            &format!("{payload}."),
            &format!("{payload}.!!"),
            "a.b.c",
        ] {
            assert!(v.check(junk, sent).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(spoken(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(spoken(Duration::from_secs(3600)), "1 hour");
        assert_eq!(spoken(Duration::from_secs(5400)), "90 minutes");
        assert_eq!(spoken(Duration::from_secs(45)), "45 seconds");
    }

    #[test]
    fn seven_bit_bodies_only() {
        assert!(seven_bit("a\r\nb\r\n".into()).is_some());
        assert!(seven_bit(format!("{}\r\n", "x".repeat(998))).is_some());
        assert!(seven_bit(format!("{}\r\n", "x".repeat(999))).is_none());
        assert!(seven_bit("caf\u{e9}".into()).is_none());
        assert!(seven_bit("bare\nlf".into()).is_none());
    }

    #[test]
    fn the_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.toml");
        let path = key_path(&config);
        assert_eq!(path, dir.path().join("relay.verification-key"));
        let first = load_or_create_key(&path).unwrap();
        let second = load_or_create_key(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 32);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
