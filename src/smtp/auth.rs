//! SMTP AUTH (RFC 4954) with SASL PLAIN (RFC 4616) and LOGIN, as a small state machine:
//! [`start`] takes the AUTH command's mechanism and initial response, [`respond`] each line
//! the client sends after a `334` challenge. Nothing here does I/O or checks a password;
//! the session answers each [`Step`] and asks its handler about the [`Credentials`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The mechanisms offered in EHLO (`AUTH PLAIN LOGIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// What the exchange waits for after a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN without an initial response: the `authzid NUL authcid NUL passwd` message.
    Plain,
    /// LOGIN: the username.
    LoginUsername,
    /// LOGIN: the password of `username`.
    LoginPassword { username: String },
}

/// A username and password as the client gave them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Debug output never shows the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The outcome of one step of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer `334 <challenge>` (base64) and wait for the next line in `Exchange`.
    Challenge(Exchange, &'static str),
    /// The client has given its credentials: check them.
    Done(Credentials),
    /// The client sent `*`: `501 5.7.0`.
    Cancelled,
    /// The response is not base64: `501 5.5.2`.
    BadBase64,
    /// The response decodes, but not to credentials (NUL bytes where none may be, invalid
    /// UTF-8, PLAIN without its three fields, an authorization identity other than the
    /// user's own): answered as bad credentials, and counted as a failure.
    Malformed(&'static str),
}

/// `Username:` and `Password:`, the challenges of LOGIN.
const USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
const PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// The first step of `AUTH <mechanism> [initial-response]`; `initial` is `None` when the
/// command has no initial response (`=` stands for an empty one, RFC 4954 4).
pub fn start(mechanism: Mechanism, initial: Option<&str>) -> Step {
    match (mechanism, initial) {
        (Mechanism::Plain, None) => Step::Challenge(Exchange::Plain, ""),
        (Mechanism::Login, None) => Step::Challenge(Exchange::LoginUsername, USERNAME_CHALLENGE),
        (mechanism, Some(response)) => {
            let exchange = match mechanism {
                Mechanism::Plain => Exchange::Plain,
                Mechanism::Login => Exchange::LoginUsername,
            };
            if response == "*" {
                return Step::Cancelled;
            }
            let decoded = if response == "=" {
                Ok(Vec::new())
            } else {
                decode(response.as_bytes())
            };
            match decoded {
                Ok(bytes) => next(exchange, bytes),
                Err(step) => step,
            }
        }
    }
}

/// The step after the client's response `line` (its CRLF may still be on it).
pub fn respond(exchange: Exchange, line: &[u8]) -> Step {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"*" {
        return Step::Cancelled;
    }
    match decode(line) {
        Ok(bytes) => next(exchange, bytes),
        Err(step) => step,
    }
}

fn decode(text: &[u8]) -> Result<Vec<u8>, Step> {
    STANDARD.decode(text).map_err(|_| Step::BadBase64)
}

fn next(exchange: Exchange, bytes: Vec<u8>) -> Step {
    match exchange {
        Exchange::Plain => plain(&bytes),
        Exchange::LoginUsername => match field(bytes) {
            Ok(username) => {
                Step::Challenge(Exchange::LoginPassword { username }, PASSWORD_CHALLENGE)
            }
            Err(why) => Step::Malformed(why),
        },
        Exchange::LoginPassword { username } => match field(bytes) {
            Ok(password) => Step::Done(Credentials { username, password }),
            Err(why) => Step::Malformed(why),
        },
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, UTF-8; the authorization identity, when
/// given, must be the user's own (no acting for another user).
fn plain(bytes: &[u8]) -> Step {
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Malformed("PLAIN response without exactly three NUL-separated fields");
    };
    let (Ok(authzid), Ok(username), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(passwd),
    ) else {
        return Step::Malformed("PLAIN response not UTF-8");
    };
    if username.is_empty() {
        return Step::Malformed("PLAIN response without a username");
    }
    if !authzid.is_empty() && authzid != username {
        return Step::Malformed("PLAIN authorization identity is another user");
    }
    Step::Done(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// A LOGIN username or password: UTF-8 without NUL.
fn field(bytes: Vec<u8>) -> Result<String, &'static str> {
    if bytes.contains(&0) {
        return Err("LOGIN response holds a NUL byte");
    }
    String::from_utf8(bytes).map_err(|_| "LOGIN response not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn done(user: &str, pass: &str) -> Step {
        Step::Done(Credentials {
            username: user.into(),
            password: pass.into(),
        })
    }

    #[test]
    fn plain_with_an_initial_response() {
        let r = b64(b"\0app\0secret");
        assert_eq!(start(Mechanism::Plain, Some(&r)), done("app", "secret"));
        let r = b64(b"app\0app\0secret");
        assert_eq!(start(Mechanism::Plain, Some(&r)), done("app", "secret"));
        let r = b64("\0jos\u{e9}\0p\u{e4}ss".as_bytes());
        assert_eq!(
            start(Mechanism::Plain, Some(&r)),
            done("jos\u{e9}", "p\u{e4}ss")
        );
    }

    #[test]
    fn plain_after_a_challenge() {
        let Step::Challenge(exchange, "") = start(Mechanism::Plain, None) else {
            panic!("PLAIN without a response gets an empty challenge");
        };
        let line = format!("{}\r\n", b64(b"\0app\0secret"));
        assert_eq!(respond(exchange, line.as_bytes()), done("app", "secret"));
    }

    #[test]
    fn login_in_both_forms() {
        let Step::Challenge(exchange, USERNAME_CHALLENGE) = start(Mechanism::Login, None) else {
            panic!("LOGIN asks for the username");
        };
        let step = respond(exchange, format!("{}\r\n", b64(b"app")).as_bytes());
        let Step::Challenge(exchange, PASSWORD_CHALLENGE) = step else {
            panic!("then for the password: {step:?}");
        };
        assert_eq!(
            respond(
                exchange.clone(),
                format!("{}\r\n", b64(b"secret")).as_bytes()
            ),
            done("app", "secret")
        );
        // An empty password is a response like any other.
        assert_eq!(respond(exchange, b"\r\n"), done("app", ""));
        let step = start(Mechanism::Login, Some(&b64(b"app")));
        assert_eq!(
            step,
            Step::Challenge(
                Exchange::LoginPassword {
                    username: "app".into()
                },
                PASSWORD_CHALLENGE
            )
        );
    }

    #[test]
    fn cancel_broken_base64_and_malformed_responses() {
        assert_eq!(respond(Exchange::Plain, b"*\r\n"), Step::Cancelled);
        assert_eq!(respond(Exchange::LoginUsername, b"*\n"), Step::Cancelled);
        assert_eq!(start(Mechanism::Plain, Some("*")), Step::Cancelled);
        for bad in [
            &b"not base64!"[..],
            b"AGFwcABzZWNyZXQ",
            b"\xff\xfe",
            b"AG==",
        ] {
            assert!(
                matches!(
                    respond(Exchange::Plain, bad),
                    Step::BadBase64 | Step::Malformed(_)
                ),
                "{bad:?}"
            );
        }
        assert_eq!(respond(Exchange::Plain, b"%%%%\r\n"), Step::BadBase64);
        assert_eq!(start(Mechanism::Login, Some("a b")), Step::BadBase64);
        let malformed = [
            b64(b"app\0secret"),
            b64(b"\0app\0secret\0more"),
            b64(b"\0\0secret"),
            b64(b"other\0app\0secret"),
            b64(b"\0app\0\xff\xfe"),
            b64(b""),
        ];
        for r in malformed {
            assert!(
                matches!(start(Mechanism::Plain, Some(&r)), Step::Malformed(_)),
                "{r}"
            );
        }
        assert!(matches!(
            start(Mechanism::Plain, Some("=")),
            Step::Malformed(_)
        ));
        assert!(matches!(
            respond(Exchange::LoginUsername, b64(b"a\0b").as_bytes()),
            Step::Malformed(_)
        ));
        assert!(matches!(
            respond(
                Exchange::LoginPassword {
                    username: "a".into()
                },
                b64(b"\xc3\x28").as_bytes()
            ),
            Step::Malformed(_)
        ));
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            username: "app".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
