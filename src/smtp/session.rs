//! One SMTP connection's state machine, over any `AsyncRead + AsyncWrite`.
//!
//! The session parses commands with smtp-proto, keeps the transaction (MAIL, RCPT),
//! reads DATA through [`DataDecoder`] and hands the finished message to a [`Handler`]. It
//! knows nothing of SES: every policy decision is the handler's.
//!
//! Replies are queued and written when the session has no complete command left to
//! process, so a pipelining client gets its replies in one write (RFC 2920).
//!
//! The session runs over a boxed stream, which STARTTLS replaces with the TLS stream over
//! it; the session then starts over (RFC 3207), and whatever the client sent after STARTTLS
//! before the handshake is discarded, never executed (CVE-2011-0411).

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME,
    MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
    RcptTo, Request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth::{self, Credentials, Exchange, Mechanism, Step};
use super::budget::{InflightBudget, Reservation};
use super::data::{DataDecoder, Decoded, Progress};
use super::reply::{self, Reply};
use crate::tls::{Tls, TlsInfo};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;
/// The failed AUTH that closes the session (with 421 4.7.0 instead of 535).
const MAX_AUTH_FAILURES: u32 = 3;
/// After this many syntax or sequence errors the connection is closed (Postfix's hard
/// error limit); the count starts again after each accepted message.
const MAX_ERRORS: u32 = 20;
const READ_CHUNK: usize = 64 * 1024;
/// How long the last reply may take to write once the session is being closed at
/// `shutdown_timeout`.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings one session runs with (a snapshot taken when the connection opens).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Bounds each whole command line (from when the session starts waiting for it), each
    /// read of DATA and each reply write.
    pub idle_timeout: Duration,
    /// Clients that may send without AUTH. Everyone else must AUTH before MAIL when
    /// `auth_enabled`, and is turned away at connect when not.
    pub trusted_networks: Vec<IpNet>,
    /// `[auth]` is set: AUTH PLAIN and LOGIN are offered (under TLS, or to loopback peers).
    pub auth_enabled: bool,
    /// How long a failed AUTH waits before its 535 (or its 421).
    pub auth_failure_delay: Duration,
    /// `[tls] require`: MAIL before STARTTLS gets 530 5.7.0.
    pub require_tls: bool,
}

impl SessionConfig {
    pub fn is_trusted(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted_networks.iter().any(|net| net.contains(&ip))
    }
}

/// Where the server stands in its life; sessions watch it (SPEC.md section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifecycle {
    Serving,
    /// Stopping: a session waiting for a command answers 421 4.3.2 and closes; messages
    /// in flight finish.
    Draining,
    /// `shutdown_timeout` has passed: every session still open answers 421 4.3.2 and
    /// closes, whatever it was doing; a message not yet accepted is discarded.
    Closing,
}

/// What a session shares with the rest of the server.
#[derive(Debug, Clone)]
pub struct Context {
    /// Pays for the DATA buffers of all sessions together.
    pub budget: InflightBudget,
    pub lifecycle: watch::Receiver<Lifecycle>,
    /// The certificate for STARTTLS; `None` when `[tls]` is not configured.
    pub tls: Option<Arc<Tls>>,
}

impl Context {
    /// A context of its own: `budget`, and a lifecycle driven by the returned sender.
    pub fn new(budget: InflightBudget) -> (watch::Sender<Lifecycle>, Context) {
        let (tx, lifecycle) = watch::channel(Lifecycle::Serving);
        (
            tx,
            Context {
                budget,
                lifecycle,
                tls: None,
            },
        )
    }
}

/// A complete message with its envelope, as the client sent it.
#[derive(Debug)]
pub struct Transaction {
    pub peer: SocketAddr,
    /// The name given in HELO/EHLO.
    pub helo: String,
    /// True after EHLO, false after HELO.
    pub esmtp: bool,
    /// What TLS negotiated, when the message came over TLS (STARTTLS or implicit).
    pub tls: Option<TlsInfo>,
    /// The reverse path; empty for `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The user the client authenticated as (SMTP AUTH); `None` for a trusted peer that
    /// did not.
    pub auth_user: Option<String>,
    /// Dot-unstuffed content with CRLF line endings.
    pub content: Vec<u8>,
    /// The share of the in-flight budget that `content` holds. It is given back when the
    /// transaction is dropped, that is when the handler's `deliver` has returned (or
    /// earlier, if the handler drops it once the message is gone).
    pub reservation: Reservation,
}

/// What a listener or a session reports as it goes, for the handler to count (metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A TCP connection was accepted (whatever happens to it next).
    Accepted,
    /// A session started (it holds one of `max_connections`' slots).
    SessionStarted,
    /// A session ended.
    SessionEnded,
    /// A connection was turned away: `max_connections` reached (421 4.7.0).
    RefusedMaxConnections,
    /// A connection was turned away: not in `trusted_networks`, and no AUTH (554 5.7.1).
    RefusedNetwork,
    /// A message over `max_message_size`, read to its end and refused (552).
    MessageTooLarge,
    /// A message refused because `max_inflight_bytes` was spent (452 4.3.1).
    MessageNoRoom,
}

/// What the session asks of the rest of the relay.
pub trait Handler: Send + Sync + 'static {
    /// Takes note of an [`Event`]; by default, nothing.
    fn observe(&self, event: Event) {
        let _ = event;
    }
    /// The settings for a new connection.
    fn session_config(&self) -> Arc<SessionConfig>;
    /// Whether the MAIL FROM address can be relayed (syntax only; no policy).
    fn check_sender(&self, address: &str) -> Result<(), Reply>;
    /// Whether the RCPT TO address can be relayed (syntax only; no policy).
    fn check_recipient(&self, address: &str) -> Result<(), Reply>;
    /// Judges and forwards a complete message; the reply is the client's answer to DATA.
    fn deliver(&self, transaction: Transaction) -> impl Future<Output = Reply> + Send;
    /// Whether `password` is `username`'s (SMTP AUTH). Asked only when the session config
    /// has `auth_enabled`; it should take as long for an unknown user as for a known one.
    fn authenticate(&self, username: &str, password: &str) -> impl Future<Output = bool> + Send;
}

/// A stream the session can run over: plain TCP, TLS, or an in-memory pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs one connection to its end, and shuts the stream down.
pub async fn run<S, H>(stream: S, peer: SocketAddr, handler: &H, context: Context) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    start(Box::new(stream), None, peer, handler, context).await
}

/// Runs one connection whose TLS handshake is done (implicit TLS, `listen_tls`).
pub async fn run_tls<S, H>(
    stream: tokio_rustls::server::TlsStream<S>,
    peer: SocketAddr,
    handler: &H,
    context: Context,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let info = TlsInfo::of(stream.get_ref().1);
    start(Box::new(stream), Some(info), peer, handler, context).await
}

async fn start<H: Handler>(
    stream: Box<dyn Io>,
    tls: Option<TlsInfo>,
    peer: SocketAddr,
    handler: &H,
    context: Context,
) -> io::Result<()> {
    let config = handler.session_config();
    let mut session = Session {
        stream,
        peer,
        config: &config,
        lifecycle: context.lifecycle,
        budget: context.budget,
        acceptor: context.tls,
        tls,
        input: Vec::with_capacity(1024),
        output: Vec::with_capacity(1024),
        discarding: false,
        line_deadline: None,
        errors: 0,
        helo: None,
        esmtp: false,
        mail_from: None,
        size_hint: None,
        rcpt_to: Vec::new(),
        auth_user: None,
        auth_failures: 0,
        sasl: None,
    };
    let result = session.run(handler).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), session.stream.shutdown()).await;
    result
}

struct Session<'a> {
    stream: Box<dyn Io>,
    peer: SocketAddr,
    config: &'a SessionConfig,
    lifecycle: watch::Receiver<Lifecycle>,
    budget: InflightBudget,
    /// The certificate STARTTLS uses; `None` without `[tls]`.
    acceptor: Option<Arc<Tls>>,
    /// Set once TLS is active.
    tls: Option<TlsInfo>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    /// Skipping the rest of an over-long command line.
    discarding: bool,
    /// When the command line being read must be complete (`idle_timeout` after the
    /// session began waiting for it); `None` between lines.
    line_deadline: Option<Instant>,
    /// Syntax and sequence errors since the last accepted message.
    errors: u32,
    helo: Option<String>,
    esmtp: bool,
    mail_from: Option<String>,
    /// The `SIZE=` of MAIL, bounded by `max_message_size`.
    size_hint: Option<usize>,
    rcpt_to: Vec<String>,
    /// The user authenticated with AUTH.
    auth_user: Option<String>,
    /// Failed AUTH attempts in this session.
    auth_failures: u32,
    /// An AUTH exchange waiting for the client's response to a `334` challenge.
    sasl: Option<Exchange>,
}

/// What to do after a command.
enum Next {
    Continue,
    Data,
    StartTls,
    Close,
    /// Check credentials; `None`: the response could not hold any (a failure as well).
    Authenticate(Option<Credentials>),
}

enum Filled {
    Data,
    Eof,
    Timeout,
    Shutdown,
}

/// What a read waits for.
#[derive(Clone, Copy)]
enum Wait {
    /// A command line, due by the deadline; the session stops at [`Lifecycle::Draining`].
    Command(Instant),
    /// More DATA, due within `idle_timeout`; the session stops at [`Lifecycle::Closing`].
    Data,
}

enum Line {
    Command(Vec<u8>),
    TooLong,
}

impl Session<'_> {
    async fn run<H: Handler>(&mut self, handler: &H) -> io::Result<()> {
        if !self.config.is_trusted(&self.peer) && !self.config.auth_enabled {
            tracing::info!(peer = %self.peer, "refused: not in trusted_networks");
            handler.observe(Event::RefusedNetwork);
            self.reply(&reply::access_denied());
            return self.flush().await;
        }
        self.reply(&reply::greeting(&self.config.hostname));
        loop {
            if self.errors >= MAX_ERRORS {
                self.reply(&reply::too_many_errors());
                return self.flush().await;
            }
            let next = match self.next_line() {
                Some(Line::TooLong) => {
                    // An over-long response also ends an AUTH exchange.
                    self.sasl = None;
                    self.errors += 1;
                    self.reply(&reply::line_too_long());
                    Next::Continue
                }
                Some(Line::Command(line)) => match self.sasl.take() {
                    Some(exchange) => self.sasl_step(auth::respond(exchange, &line)),
                    None => self.command(&line, handler),
                },
                None => {
                    self.flush().await?;
                    let idle = self.config.idle_timeout;
                    let deadline = *self
                        .line_deadline
                        .get_or_insert_with(|| Instant::now() + idle);
                    match self.fill(Wait::Command(deadline)).await? {
                        Filled::Data => continue,
                        Filled::Eof => return Ok(()),
                        Filled::Timeout => {
                            tracing::info!(peer = %self.peer, "idle_timeout waiting for a command line");
                            self.reply(&reply::idle_timeout());
                            return self.flush().await;
                        }
                        Filled::Shutdown => {
                            self.reply(&reply::shutting_down(&self.config.hostname));
                            return self.flush().await;
                        }
                    }
                }
            };
            match next {
                Next::Continue => {}
                Next::Close => return self.flush().await,
                Next::Authenticate(credentials) => {
                    if let Next::Close = self.authenticate(credentials, handler).await {
                        return self.flush().await;
                    }
                }
                Next::Data => {
                    if let Next::Close = self.data(handler).await? {
                        return self.flush().await;
                    }
                }
                Next::StartTls => {
                    if !self.start_tls().await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// After `220 Ready to start TLS`: the handshake, within `idle_timeout`, then the
    /// session starts over. False when the connection is to be closed.
    async fn start_tls(&mut self) -> io::Result<bool> {
        let Some(acceptor) = self.acceptor.as_ref().map(|tls| tls.acceptor()) else {
            return Ok(false);
        };
        self.flush().await?;
        if !self.input.is_empty() {
            // RFC 3207 section 6 / CVE-2011-0411: nothing sent before the handshake may be
            // taken as a command after it.
            tracing::info!(
                peer = %self.peer, bytes = self.input.len(),
                "discarded what the client pipelined after STARTTLS"
            );
            self.input.clear();
        }
        self.discarding = false;
        self.line_deadline = None;
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let handshake = tokio::time::timeout(self.config.idle_timeout, acceptor.accept(plain));
        let stop = reached(&mut self.lifecycle, Lifecycle::Closing);
        let stream = tokio::select! {
            biased;
            () = stop => return Ok(false),
            result = handshake => match result {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(peer = %self.peer, error = %e, "TLS handshake failed");
                    return Ok(false);
                }
                Err(_) => {
                    tracing::info!(peer = %self.peer, "idle_timeout during the TLS handshake");
                    return Ok(false);
                }
            },
        };
        let info = TlsInfo::of(stream.get_ref().1);
        tracing::debug!(peer = %self.peer, version = %info.version, cipher = %info.cipher, "TLS started");
        self.stream = Box::new(stream);
        self.tls = Some(info);
        // RFC 3207 4.2: the client's knowledge from before TLS is discarded, an AUTH
        // (a loopback client may AUTH without TLS) included.
        self.helo = None;
        self.esmtp = false;
        self.reset_transaction();
        self.errors = 0;
        self.auth_user = None;
        self.auth_failures = 0;
        self.sasl = None;
        Ok(true)
    }

    /// Takes the next complete command line out of the input, if there is one.
    fn next_line(&mut self) -> Option<Line> {
        match memchr(b'\n', &self.input) {
            Some(pos) => {
                self.line_deadline = None;
                let line: Vec<u8> = self.input.drain(..=pos).collect();
                if std::mem::take(&mut self.discarding) || line.len() > MAX_COMMAND_LINE {
                    Some(Line::TooLong)
                } else {
                    Some(Line::Command(line))
                }
            }
            None => {
                if self.input.len() > MAX_COMMAND_LINE {
                    self.discarding = true;
                    self.input.clear();
                }
                None
            }
        }
    }

    fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Writes the queued replies, within `idle_timeout`; once the session is being closed
    /// at `shutdown_timeout`, within a short bound, and a write under way is given up.
    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let closing = *self.lifecycle.borrow() == Lifecycle::Closing;
        let limit = if closing {
            self.config.idle_timeout.min(CLOSING_WRITE_TIMEOUT)
        } else {
            self.config.idle_timeout
        };
        let (stream, output) = (&mut self.stream, &self.output);
        let write = tokio::time::timeout(limit, async {
            stream.write_all(output).await?;
            stream.flush().await
        });
        let stop = reached(&mut self.lifecycle, Lifecycle::Closing);
        tokio::select! {
            result = write => match result {
                Ok(result) => result?,
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "reply write timed out"));
                }
            },
            () = stop, if !closing => {
                return Err(io::Error::other("reply write cut at shutdown_timeout"));
            }
        }
        self.output.clear();
        Ok(())
    }

    /// Reads more input, unless the deadline passes or the server stops first.
    async fn fill(&mut self, wait: Wait) -> io::Result<Filled> {
        self.input.reserve(READ_CHUNK);
        let (deadline, stop_at) = match wait {
            Wait::Command(deadline) => (deadline, Lifecycle::Draining),
            Wait::Data => (
                Instant::now() + self.config.idle_timeout,
                Lifecycle::Closing,
            ),
        };
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input));
        let stop = reached(&mut self.lifecycle, stop_at);
        tokio::select! {
            biased;
            () = stop => Ok(Filled::Shutdown),
            result = read => match result {
                Err(_) => Ok(Filled::Timeout),
                Ok(Ok(0)) => Ok(Filled::Eof),
                Ok(Ok(_)) => Ok(Filled::Data),
                Ok(Err(e)) => Err(e),
            },
        }
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.size_hint = None;
        self.rcpt_to.clear();
    }

    fn command<H: Handler>(&mut self, line: &[u8], handler: &H) -> Next {
        if is_http(line) {
            // Postfix's smtpd_forbidden_commands: a web client or proxy, not SMTP.
            tracing::info!(peer = %self.peer, "non-SMTP command (HTTP); connection closed");
            return Next::Close;
        }
        let request = Request::parse(&mut line.iter());
        let reply = match request {
            Ok(request) => match self.request(request, line, handler) {
                Ok(next) => return next,
                Err(reply) => reply,
            },
            // smtp-proto refuses some sizes too large for its integer as bad syntax.
            Err(ParseError::InvalidParameter { .. })
                if is_mail(line) && self.too_large(declared_size(line)) =>
            {
                reply::message_too_long()
            }
            Err(e) => parse_error_reply(&e),
        };
        if counts_as_error(&reply) {
            self.errors += 1;
        }
        self.reply(&reply);
        Next::Continue
    }

    /// One parsed command (`line` is its raw text). `Ok` means the replies are queued;
    /// `Err` is a refusal.
    fn request<H: Handler>(
        &mut self,
        request: Request<Cow<'_, str>>,
        line: &[u8],
        handler: &H,
    ) -> Result<Next, Reply> {
        match request {
            Request::Ehlo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                self.esmtp = true;
                self.ehlo();
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                self.esmtp = false;
                self.reply(&reply::helo(&self.config.hostname));
            }
            Request::Mail { from } => {
                self.mail(&from, line, handler)?;
                self.reply(&reply::sender_ok());
            }
            Request::Rcpt { to } => {
                self.rcpt(&to, handler)?;
                self.reply(&reply::recipient_ok());
            }
            Request::Data => {
                if self.mail_from.is_none() {
                    return Err(reply::need_mail());
                }
                if self.rcpt_to.is_empty() {
                    return Err(reply::need_rcpt());
                }
                return Ok(Next::Data);
            }
            Request::Rset => {
                self.reset_transaction();
                self.reply(&reply::ok());
            }
            Request::Noop { .. } => self.reply(&reply::ok()),
            Request::Quit => {
                self.reply(&reply::bye());
                return Ok(Next::Close);
            }
            Request::Vrfy { .. } => self.reply(&reply::vrfy()),
            Request::Help { .. } => self.reply(&reply::help()),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, &initial_response),
            Request::Lhlo { .. } => return Err(reply::unknown_command()),
            Request::StartTls => {
                if !line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") {
                    return Err(reply::syntax("STARTTLS"));
                }
                if self.tls.is_some() {
                    self.errors += 1;
                    return Err(reply::tls_already_active());
                }
                if self.acceptor.is_none() {
                    return Err(reply::not_implemented());
                }
                self.reply(&reply::ready_to_start_tls());
                return Ok(Next::StartTls);
            }
            Request::Expn { .. }
            | Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => return Err(reply::not_implemented()),
        }
        Ok(Next::Continue)
    }

    fn ehlo(&mut self) {
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.acceptor.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    /// AUTH is offered and accepted when `[auth]` is set and the connection is under TLS
    /// or from loopback (where there is no wire to read a password from).
    fn auth_offered(&self) -> bool {
        self.config.auth_enabled
            && (self.tls.is_some() || self.peer.ip().to_canonical().is_loopback())
    }

    /// `AUTH <mechanism> [initial-response]`. Where AUTH is not offered (no `[auth]`, or
    /// neither TLS nor loopback) it gets Postfix's `503 5.5.1 Error: authentication not
    /// enabled`, as Postfix answers with `smtpd_tls_auth_only` before STARTTLS.
    fn auth(&mut self, mechanism: u64, initial: &str) -> Result<Next, Reply> {
        if self.config.require_tls && self.tls.is_none() {
            return Err(reply::must_start_tls());
        }
        if !self.auth_offered() {
            return Err(reply::auth_not_enabled());
        }
        if self.helo.is_none() {
            return Err(reply::need_helo());
        }
        if self.auth_user.is_some() {
            return Err(reply::already_authenticated());
        }
        if self.mail_from.is_some() {
            return Err(reply::auth_in_transaction());
        }
        let mechanism = match mechanism {
            AUTH_PLAIN => Mechanism::Plain,
            AUTH_LOGIN => Mechanism::Login,
            _ => return Err(reply::auth_unsupported_mechanism()),
        };
        let initial = (!initial.is_empty()).then_some(initial);
        Ok(self.sasl_step(auth::start(mechanism, initial)))
    }

    /// Answers one step of an AUTH exchange.
    fn sasl_step(&mut self, step: Step) -> Next {
        let refusal = match step {
            Step::Challenge(exchange, challenge) => {
                self.sasl = Some(exchange);
                self.reply(&reply::auth_challenge(challenge));
                return Next::Continue;
            }
            Step::Done(credentials) => return Next::Authenticate(Some(credentials)),
            Step::Malformed(why) => {
                tracing::info!(peer = %self.peer, why, "AUTH response holds no credentials");
                return Next::Authenticate(None);
            }
            Step::Cancelled => reply::auth_cancelled(),
            Step::BadBase64 => reply::auth_bad_base64(),
        };
        self.errors += 1;
        self.reply(&refusal);
        Next::Continue
    }

    /// Checks credentials with the handler. A failure waits `auth_failure_delay` and gets
    /// 535; the third of the session gets 421 and closes it.
    async fn authenticate<H: Handler>(
        &mut self,
        credentials: Option<Credentials>,
        handler: &H,
    ) -> Next {
        if let Some(credentials) = credentials
            && handler
                .authenticate(&credentials.username, &credentials.password)
                .await
        {
            tracing::info!(peer = %self.peer, user = %credentials.username, "authenticated");
            self.auth_user = Some(credentials.username);
            self.reply(&reply::auth_succeeded());
            return Next::Continue;
        }
        self.auth_failures += 1;
        tracing::info!(peer = %self.peer, failures = self.auth_failures, "authentication failed");
        tokio::time::sleep(self.config.auth_failure_delay).await;
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.reply(&reply::auth_too_many_failures());
            return Next::Close;
        }
        self.reply(&reply::auth_failed());
        Next::Continue
    }

    fn mail<H: Handler>(
        &mut self,
        from: &MailFrom<Cow<'_, str>>,
        line: &[u8],
        handler: &H,
    ) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(reply::need_helo());
        }
        if self.config.require_tls && self.tls.is_none() {
            return Err(reply::must_start_tls());
        }
        if self.auth_user.is_none() && !self.config.is_trusted(&self.peer) {
            return Err(reply::auth_required());
        }
        if self.mail_from.is_some() {
            return Err(reply::nested_mail());
        }
        if let Some(param) = unsupported_mail_parameter(from) {
            return Err(reply::unsupported_parameter(param));
        }
        // smtp-proto wraps a SIZE too large for its integer; the raw text is the truth.
        let declared = declared_size(line);
        if self.too_large(declared) || from.size > self.config.max_message_size {
            return Err(reply::message_too_long());
        }
        let declared = match declared {
            DeclaredSize::Value(size) => Some(size),
            DeclaredSize::None | DeclaredSize::TooLarge => None,
        };
        let address = from.address.as_ref();
        if !address.is_empty() {
            if !address.is_ascii() {
                return Err(reply::non_ascii_address());
            }
            handler.check_sender(address)?;
        }
        self.mail_from = Some(address.to_owned());
        self.size_hint = declared.and_then(|size| usize::try_from(size).ok());
        Ok(())
    }

    /// Whether a declared `SIZE=` is over `max_message_size` (or past counting).
    fn too_large(&self, declared: DeclaredSize) -> bool {
        match declared {
            DeclaredSize::None => false,
            DeclaredSize::Value(size) => size > self.config.max_message_size as u64,
            DeclaredSize::TooLarge => true,
        }
    }

    fn rcpt<H: Handler>(&mut self, to: &RcptTo<Cow<'_, str>>, handler: &H) -> Result<(), Reply> {
        if self.mail_from.is_none() {
            return Err(reply::need_mail());
        }
        if let Some(param) = unsupported_rcpt_parameter(to) {
            return Err(reply::unsupported_parameter(param));
        }
        let address = to.address.as_ref();
        if address.is_empty() {
            return Err(reply::bad_recipient_syntax());
        }
        if !address.is_ascii() {
            return Err(reply::non_ascii_address());
        }
        if self.rcpt_to.len() >= self.config.max_recipients {
            return Err(reply::too_many_recipients());
        }
        handler.check_recipient(address)?;
        self.rcpt_to.push(address.to_owned());
        Ok(())
    }

    /// Reads the message after DATA and answers it.
    async fn data<H: Handler>(&mut self, handler: &H) -> io::Result<Next> {
        self.reply(&reply::start_data());
        self.flush().await?;
        let mut decoder = DataDecoder::with_budget(
            self.config.max_message_size,
            self.size_hint,
            self.budget.reservation(),
        );
        loop {
            if !self.input.is_empty() {
                match decoder.feed(&self.input) {
                    Progress::Done { consumed } => {
                        self.input.drain(..consumed);
                        break;
                    }
                    Progress::NeedMore => self.input.clear(),
                }
            }
            match self.fill(Wait::Data).await? {
                Filled::Data => {}
                Filled::Eof => {
                    tracing::info!(peer = %self.peer, "client went away during DATA; message discarded");
                    return Ok(Next::Close);
                }
                Filled::Shutdown => {
                    tracing::info!(peer = %self.peer, "shutdown_timeout during DATA; message discarded");
                    self.reply(&reply::shutting_down(&self.config.hostname));
                    return Ok(Next::Close);
                }
                Filled::Timeout => {
                    tracing::info!(peer = %self.peer, "timeout during DATA; message discarded");
                    self.reply(&reply::idle_timeout());
                    return Ok(Next::Close);
                }
            }
        }
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        self.size_hint = None;
        let reply = match decoder.finish() {
            Decoded::TooLong => {
                tracing::info!(peer = %self.peer, from = %mail_from, "message over max_message_size refused");
                handler.observe(Event::MessageTooLarge);
                reply::message_too_long()
            }
            Decoded::NoRoom => {
                tracing::warn!(
                    peer = %self.peer, from = %mail_from,
                    in_flight = self.budget.in_use(), limit = self.budget.limit(),
                    "message refused: max_inflight_bytes reached"
                );
                handler.observe(Event::MessageNoRoom);
                reply::insufficient_resources()
            }
            Decoded::Message {
                content,
                reservation,
            } => {
                let transaction = Transaction {
                    peer: self.peer,
                    helo: self.helo.clone().unwrap_or_default(),
                    esmtp: self.esmtp,
                    tls: self.tls.clone(),
                    mail_from,
                    rcpt_to,
                    auth_user: self.auth_user.clone(),
                    content,
                    reservation,
                };
                let deliver = handler.deliver(transaction);
                let stop = reached(&mut self.lifecycle, Lifecycle::Closing);
                tokio::select! {
                    biased;
                    reply = deliver => reply,
                    () = stop => {
                        tracing::warn!(peer = %self.peer, "shutdown_timeout while forwarding; message given up");
                        self.reply(&reply::shutting_down(&self.config.hostname));
                        return Ok(Next::Close);
                    }
                }
            }
        };
        if reply.code() / 100 == 2 {
            self.errors = 0;
        }
        self.reply(&reply);
        Ok(Next::Continue)
    }
}

/// Resolves when the lifecycle is (or becomes) `phase` or later; never, if its sender is
/// gone.
async fn reached(rx: &mut watch::Receiver<Lifecycle>, phase: Lifecycle) {
    loop {
        if *rx.borrow_and_update() >= phase {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Syntax and sequence errors count towards the error limit; refusals of a well-formed
/// command (too many recipients, too large, a non-ASCII address) do not.
fn counts_as_error(reply: &Reply) -> bool {
    matches!(reply.code(), 500..=504 | 555)
}

/// The `SIZE=` parameter of a MAIL command line, read from its raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeclaredSize {
    None,
    Value(u64),
    /// Digits too many for any size.
    TooLarge,
}

fn declared_size(line: &[u8]) -> DeclaredSize {
    for param in mail_parameters(line) {
        let Some((name, value)) = split_at_eq(param) else {
            continue;
        };
        if !name.eq_ignore_ascii_case(b"SIZE") {
            continue;
        }
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            // Not a number: smtp-proto has refused it already.
            return DeclaredSize::None;
        }
        let mut size: u64 = 0;
        for &digit in value {
            match size
                .checked_mul(10)
                .and_then(|s| s.checked_add(u64::from(digit - b'0')))
            {
                Some(s) => size = s,
                None => return DeclaredSize::TooLarge,
            }
        }
        return DeclaredSize::Value(size);
    }
    DeclaredSize::None
}

/// An HTTP request line or header on the SMTP port: `GET `, `POST `, `CONNECT `, or a line
/// whose first word ends in a colon (`Host:`, `User-Agent:`), as Postfix's
/// `smtpd_forbidden_commands`.
fn is_http(line: &[u8]) -> bool {
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    let methods: [&[u8]; 3] = [b"GET", b"POST", b"CONNECT"];
    let is_method =
        methods.iter().any(|m| word.eq_ignore_ascii_case(m)) && line.get(word.len()) == Some(&b' ');
    is_method || (word.len() > 1 && word.ends_with(b":"))
}

fn is_mail(line: &[u8]) -> bool {
    line.get(..5)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"MAIL "))
}

fn split_at_eq(param: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = param.iter().position(|&b| b == b'=')?;
    Some((param.get(..eq)?, param.get(eq + 1..)?))
}

/// The parameters after the path of `MAIL FROM:<path> PARAM PARAM...` (the path's
/// quoted strings skipped, so a `>` or space inside them does not count).
fn mail_parameters(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let start = line.iter().position(|&b| b == b'<');
    let rest = start.map_or(&[][..], |start| {
        let path = line.get(start + 1..).unwrap_or_default();
        let mut quoted = false;
        let mut escaped = false;
        let end = path.iter().position(|&b| {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b'>' && !quoted {
                return true;
            }
            false
        });
        end.and_then(|end| path.get(end + 1..)).unwrap_or_default()
    });
    rest.split(|b| b.is_ascii_whitespace())
        .filter(|param| !param.is_empty())
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn parse_error_reply(e: &ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => reply::unknown_command(),
        ParseError::InvalidSenderAddress => reply::bad_sender_syntax(),
        ParseError::InvalidRecipientAddress => reply::bad_recipient_syntax(),
        ParseError::SyntaxError { syntax } => reply::syntax(syntax),
        ParseError::InvalidParameter { param } => reply::bad_parameter(param),
        ParseError::UnsupportedParameter { param } => reply::unsupported_parameter(param),
        ParseError::ResponseTooLong => reply::line_too_long(),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            reply::unknown_command()
        }
    }
}

/// MAIL parameters of extensions sesrelay does not advertise (RFC 5321 4.1.1.11: 555).
fn unsupported_mail_parameter(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    let flags = from.flags & !(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME);
    if flags & MAIL_BODY_BINARYMIME != 0 {
        Some("BODY=BINARYMIME")
    } else if flags & MAIL_SMTPUTF8 != 0 {
        Some("SMTPUTF8")
    } else if flags & (MAIL_RET_FULL | MAIL_RET_HDRS) != 0 {
        Some("RET")
    } else if flags & MAIL_REQUIRETLS != 0 {
        Some("REQUIRETLS")
    } else if from.env_id.is_some() {
        Some("ENVID")
    } else if from.auth.is_some() {
        Some("AUTH")
    } else if flags != 0
        || from.trans_id.is_some()
        || from.by != 0
        || from.solicit.is_some()
        || from.mtrk.is_some()
        || from.hold_for != 0
        || from.hold_until != 0
        || from.mt_priority != 0
    {
        Some("parameter not advertised in EHLO")
    } else {
        None
    }
}

/// RCPT parameters of extensions sesrelay does not advertise (DSN, RRVS...).
fn unsupported_rcpt_parameter(to: &RcptTo<Cow<'_, str>>) -> Option<&'static str> {
    if to.orcpt.is_some() {
        Some("ORCPT")
    } else if to.flags != 0 {
        Some("NOTIFY")
    } else if to.rrvs != 0 {
        Some("RRVS")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    //! In-memory sessions over a duplex pipe, with a handler that records what it gets.

    use std::sync::Mutex;

    use super::*;

    struct Recorder {
        config: Arc<SessionConfig>,
        got: Mutex<Vec<Transaction>>,
    }

    impl Handler for Recorder {
        fn session_config(&self) -> Arc<SessionConfig> {
            Arc::clone(&self.config)
        }
        fn check_sender(&self, address: &str) -> Result<(), Reply> {
            if address.contains('@') {
                Ok(())
            } else {
                Err(reply::bad_sender_syntax())
            }
        }
        fn check_recipient(&self, address: &str) -> Result<(), Reply> {
            if address.contains('@') {
                Ok(())
            } else {
                Err(reply::bad_recipient_syntax())
            }
        }
        async fn deliver(&self, transaction: Transaction) -> Reply {
            self.got.lock().unwrap().push(transaction);
            reply::accepted("ID")
        }
        async fn authenticate(&self, username: &str, password: &str) -> bool {
            username == "app" && password == "secret"
        }
    }

    fn recorder(max_message_size: usize, idle_timeout: Duration) -> Recorder {
        Recorder {
            config: Arc::new(SessionConfig {
                hostname: "relay.test".into(),
                max_message_size,
                max_recipients: 2,
                idle_timeout,
                trusted_networks: vec!["127.0.0.0/8".parse().unwrap()],
                auth_enabled: false,
                auth_failure_delay: Duration::ZERO,
                require_tls: false,
            }),
            got: Mutex::new(Vec::new()),
        }
    }

    /// Feeds `input` to a session from 127.0.0.1 (then EOF); returns everything it wrote.
    async fn dialogue(input: &[u8]) -> (String, Vec<Transaction>) {
        dialogue_from("127.0.0.1:4000".parse().unwrap(), input).await
    }

    /// The same from `peer`; only 127.0.0.0/8 is trusted.
    async fn dialogue_from(peer: SocketAddr, input: &[u8]) -> (String, Vec<Transaction>) {
        let recorder = recorder(100, Duration::from_secs(5));
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(input).await.unwrap();
        client_write.shutdown().await.unwrap();
        let (_lifecycle, context) = Context::new(InflightBudget::unlimited());
        run(server, peer, &recorder, context).await.unwrap();
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.unwrap();
        (out, recorder.got.into_inner().unwrap())
    }

    /// Feeds `input` to a session with `[auth]` set (user "app", password "secret"), from
    /// `peer`; only 10.0.0.0/8 is trusted.
    async fn auth_dialogue(peer: &str, input: &[u8]) -> (String, Vec<Transaction>) {
        let mut recorder = recorder(100, Duration::from_secs(5));
        recorder.config = Arc::new(SessionConfig {
            auth_enabled: true,
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..(*recorder.config).clone()
        });
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(input).await.unwrap();
        client_write.shutdown().await.unwrap();
        let (_lifecycle, context) = Context::new(InflightBudget::unlimited());
        run(server, peer.parse().unwrap(), &recorder, context)
            .await
            .unwrap();
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.unwrap();
        (out, recorder.got.into_inner().unwrap())
    }

    #[tokio::test]
    async fn auth_from_loopback_then_mail() {
        // "\0app\0secret"
        let (out, got) = auth_dialogue(
            "[::1]:4000",
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN AGFwcABzZWNyZXQ=\r\nAUTH PLAIN AGFwcABzZWNyZXQ=\r\n\
MAIL FROM:<a@x>\r\nAUTH LOGIN\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n",
        )
        .await;
        let replies: Vec<&str> = out.lines().collect();
        assert_eq!(
            replies,
            [
                "220 relay.test ESMTP sesrelay",
                "250-relay.test",
                "250-PIPELINING",
                "250-SIZE 100",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250 AUTH PLAIN LOGIN",
                "530 5.7.0 Authentication required",
                "235 2.7.0 Authentication successful",
                "503 5.5.1 Error: already authenticated",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: already authenticated",
                "250 2.1.5 Ok",
                "354 End data with <CR><LF>.<CR><LF>",
                "250 2.0.0 Ok ID",
            ],
            "{out}"
        );
        assert_eq!(got[0].auth_user.as_deref(), Some("app"));
    }

    #[tokio::test]
    async fn auth_is_neither_offered_nor_accepted_without_tls_off_loopback() {
        let (out, got) = auth_dialogue(
            "192.0.2.1:4000",
            b"EHLO c\r\nAUTH PLAIN AGFwcABzZWNyZXQ=\r\nMAIL FROM:<a@x>\r\n",
        )
        .await;
        assert!(
            out.starts_with("220 relay.test ESMTP sesrelay\r\n"),
            "{out}"
        );
        assert!(!out.contains("AUTH"), "{out}");
        assert!(
            out.ends_with(
                "503 5.5.1 Error: authentication not enabled\r\n530 5.7.0 Authentication required\r\n"
            ),
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn the_third_auth_failure_closes() {
        let (out, _) = auth_dialogue(
            "127.0.0.1:4000",
            b"EHLO c\r\nAUTH PLAIN AGFwcAB3cm9uZw==\r\nAUTH LOGIN\r\nYXBw\r\n*\r\n\
AUTH LOGIN YXBw\r\nd3Jvbmc=\r\nAUTH PLAIN\r\nAGFwcAB3cm9uZw==\r\nNOOP\r\n",
        )
        .await;
        assert!(
            out.ends_with(
                "535 5.7.8 Authentication Credentials Invalid\r\n334 VXNlcm5hbWU6\r\n\
334 UGFzc3dvcmQ6\r\n501 5.7.0 Authentication cancelled\r\n334 UGFzc3dvcmQ6\r\n\
535 5.7.8 Authentication Credentials Invalid\r\n334 \r\n\
421 4.7.0 Too many authentication failures, closing connection\r\n"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn starttls_without_a_certificate_is_not_implemented() {
        let (out, _) = dialogue(b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n").await;
        assert!(!out.contains("STARTTLS"), "{out}");
        assert!(
            out.ends_with("502 5.5.1 Error: command not implemented\r\n250 2.0.0 Ok\r\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn require_tls_refuses_mail_before_starttls() {
        let mut recorder = recorder(100, Duration::from_secs(5));
        Arc::make_mut(&mut recorder.config).require_tls = true;
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nQUIT\r\n")
            .await
            .unwrap();
        let (_lifecycle, context) = Context::new(InflightBudget::unlimited());
        let peer = "127.0.0.1:4000".parse().unwrap();
        run(server, peer, &recorder, context).await.unwrap();
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.unwrap();
        assert!(
            out.ends_with(
                "530 5.7.0 Must issue a STARTTLS command first\r\n\
503 5.5.1 Error: need MAIL command\r\n221 2.0.0 Bye\r\n"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn http_on_the_smtp_port_closes_without_a_reply() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /x HTTP/1.0\r\n",
            b"EHLO c\r\nHost: relay.test\r\nNOOP\r\n",
            b"CONNECT relay.test:25 HTTP/1.1\r\n",
        ] {
            let (out, _) = dialogue(input).await;
            assert!(!out.contains("250 2.0.0"), "{out}");
            assert!(!out.contains("500 "), "{out}");
        }
        assert!(!is_http(b"MAIL FROM:<a@x>\r\n"));
        assert!(!is_http(b"GET\r\n"));
        assert!(!is_http(b":\r\n"));
        assert!(is_http(b"user-agent: x\r\n"));
    }

    /// Found by the `smtp_session` fuzz target: a MAIL parameter with 8-bit bytes was echoed
    /// raw into the 555 reply.
    #[tokio::test]
    async fn eight_bit_parameters_are_echoed_as_ascii() {
        let (out, got) = dialogue(
            b"EHLO c\r\nMAIL FROM:<>-\xC3\r\nMAIL FROM:<a@example.com> X-\xC3\x84=1\r\nQUIT\r\n",
        )
        .await;
        assert!(out.is_ascii(), "{out}");
        assert!(out.contains("Unsupported option: X-?=1"), "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_whole_pipelined_session() {
        let (out, got) = dialogue(
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\n\
DATA\r\nSubject: s\r\n\r\n..dot\n.\r\n.\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            out,
            "220 relay.test ESMTP sesrelay\r\n250-relay.test\r\n250-PIPELINING\r\n\
250-SIZE 100\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
250 2.1.5 Ok\r\n452 4.5.3 Too many recipients\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
250 2.0.0 Ok ID\r\n221 2.0.0 Bye\r\n"
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mail_from, "a@x");
        assert_eq!(got[0].rcpt_to, ["b@y", "c@y"]);
        assert_eq!(got[0].helo, "c");
        assert!(got[0].esmtp);
        // "..dot" unstuffed, its bare LF normalised; ".\r\n" after a bare LF is content.
        assert_eq!(got[0].content, b"Subject: s\r\n\r\n.dot\r\n.\r\n");
    }

    #[tokio::test]
    async fn eof_in_data_delivers_nothing() {
        let (out, got) =
            dialogue(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n").await;
        assert!(
            out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn oversized_content_is_not_handed_over() {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n".to_vec();
        input.extend_from_slice(&[b'z'; 99]);
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let (out, got) = dialogue(&input).await;
        assert!(
            out.ends_with("552 5.3.4 Message is too long.\r\n221 2.0.0 Bye\r\n"),
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn untrusted_peers_get_554_and_nothing_else() {
        let peer: SocketAddr = "[::ffff:192.0.2.1]:25".parse().unwrap();
        let (out, got) = dialogue_from(peer, b"EHLO c\r\n").await;
        assert_eq!(out, "554 5.7.1 Access denied\r\n");
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_size_too_large_to_parse_gets_552_at_mail() {
        let (out, got) = dialogue(
            b"EHLO c\r\nMAIL FROM:<a@x> SIZE=99999999999999999999999\r\n\
MAIL FROM:<a@x> SIZE=18446744073709551616\r\nMAIL FROM:<a@x> SIZE=18446744073709551615\r\n\
MAIL FROM:<a@x> size=101\r\n\
MAIL FROM:<a@x> SIZE=100\r\nQUIT\r\n",
        )
        .await;
        let replies: Vec<&str> = out.lines().skip(6).collect();
        assert_eq!(
            replies,
            [
                "552 5.3.4 Message is too long.",
                "552 5.3.4 Message is too long.",
                "552 5.3.4 Message is too long.",
                "552 5.3.4 Message is too long.",
                "250 2.1.0 Ok",
                "221 2.0.0 Bye"
            ],
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn declared_size_reads_the_raw_parameter() {
        let rows: &[(&[u8], DeclaredSize)] = &[
            (b"MAIL FROM:<a@x>\r\n", DeclaredSize::None),
            (b"MAIL FROM:<a@x> SIZE=12\r\n", DeclaredSize::Value(12)),
            (
                b"MAIL FROM:<a@x> BODY=8BITMIME size=7\r\n",
                DeclaredSize::Value(7),
            ),
            (
                b"MAIL FROM:<a@x> SIZE=18446744073709551615\r\n",
                DeclaredSize::Value(u64::MAX),
            ),
            (
                b"MAIL FROM:<a@x> SIZE=18446744073709551616\r\n",
                DeclaredSize::TooLarge,
            ),
            // Inside the quoted path it is no parameter.
            (
                b"MAIL FROM:<\"x> SIZE=999999999999999999999\"@y> SIZE=5\r\n",
                DeclaredSize::Value(5),
            ),
            (b"MAIL FROM:<a@x> SIZE=\r\n", DeclaredSize::None),
            (b"MAIL FROM:<a@x", DeclaredSize::None),
            (b"", DeclaredSize::None),
        ];
        for (line, expected) in rows {
            assert_eq!(
                &declared_size(line),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[tokio::test]
    async fn the_error_limit_counts_syntax_errors_and_starts_again_after_a_message() {
        let mut input = b"EHLO c\r\n".to_vec();
        for _ in 0..19 {
            input.extend_from_slice(b"BOGUS\r\n");
        }
        // Refusals of well-formed commands do not count.
        input.extend_from_slice(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n");
        for _ in 0..5 {
            input.extend_from_slice(b"RCPT TO:<d@y>\r\n");
        }
        input.extend_from_slice(b"DATA\r\nSubject: s\r\n\r\nx\r\n.\r\n");
        // The accepted message reset the count: 19 more are allowed, the 20th closes.
        for _ in 0..20 {
            input.extend_from_slice(b"BOGUS\r\n");
        }
        input.extend_from_slice(b"NOOP\r\n");
        let (out, got) = dialogue(&input).await;
        assert_eq!(got.len(), 1);
        assert_eq!(out.matches("452 4.5.3 Too many recipients").count(), 5);
        assert_eq!(out.matches("500 5.5.2").count(), 39);
        assert!(
            out.ends_with("500 5.5.2 Error: command not recognized\r\n421 4.7.0 Too many errors, closing connection\r\n"),
            "{out}"
        );
        assert!(
            !out.contains("250 2.0.0 Ok\r\n"),
            "NOOP after the limit: {out}"
        );
    }

    #[tokio::test]
    async fn twenty_errors_without_a_message_close() {
        let mut input = b"EHLO c\r\n".to_vec();
        for _ in 0..25 {
            input.extend_from_slice(b"MAIL FROM:<a@x> SIZE=1000\r\nDATA\r\n");
        }
        let (out, _) = dialogue(&input).await;
        assert_eq!(out.matches("503 5.5.1").count(), 20, "{out}");
        assert!(out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    }

    #[tokio::test]
    async fn a_bare_cr_cannot_end_or_hide_anything() {
        let (out, got) = dialogue(
            b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n\
Subject: s\rX-Hidden: h\r\n\r\nx\r.\rMAIL FROM:<e@x>\r\n.\r\n",
        )
        .await;
        assert!(out.contains("250 2.0.0 Ok ID"), "{out}");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].content,
            b"Subject: s\r\nX-Hidden: h\r\n\r\nx\r\n.\r\nMAIL FROM:<e@x>\r\n"
        );
    }

    /// A session over a duplex pipe whose client end the test drives.
    struct Live {
        client: tokio::io::DuplexStream,
        lifecycle: watch::Sender<Lifecycle>,
        budget: InflightBudget,
        session: tokio::task::JoinHandle<Vec<Transaction>>,
    }

    impl Live {
        fn start(idle_timeout: Duration, budget: InflightBudget, max_message_size: usize) -> Live {
            let (client, server) = tokio::io::duplex(1 << 16);
            let (lifecycle, context) = Context::new(budget.clone());
            let session = tokio::spawn(async move {
                let recorder = recorder(max_message_size, idle_timeout);
                let peer = "127.0.0.1:4000".parse().unwrap();
                let _ = run(server, peer, &recorder, context).await;
                recorder.got.into_inner().unwrap()
            });
            Live {
                client,
                lifecycle,
                budget,
                session,
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.client.write_all(bytes).await.unwrap();
        }

        /// Everything the session writes until it closes (within 5 s).
        async fn rest(&mut self) -> String {
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), self.client.read_to_end(&mut out))
                .await
                .expect("the session closes")
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    }

    #[tokio::test]
    async fn a_trickled_command_line_is_cut_by_idle_timeout() {
        let mut live = Live::start(Duration::from_millis(300), InflightBudget::unlimited(), 100);
        let started = Instant::now();
        let (mut read, mut write) = tokio::io::split(&mut live.client);
        let trickle = async {
            for &b in b"NOOP and more and more\r\n" {
                if write.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        };
        let mut out = Vec::new();
        let (_, read) = tokio::join!(trickle, read.read_to_end(&mut out));
        read.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "220 relay.test ESMTP sesrelay\r\n451 4.4.2 Timeout waiting for data from client\r\n"
        );
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert!(live.session.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn draining_answers_421_at_the_next_command_and_lets_data_finish() {
        let mut live = Live::start(Duration::from_secs(5), InflightBudget::unlimited(), 100);
        live.send(b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        live.lifecycle.send(Lifecycle::Draining).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        live.send(b"\r\nbody\r\n.\r\n").await;
        let out = live.rest().await;
        assert!(
            out.ends_with("250 2.0.0 Ok ID\r\n421 4.3.2 relay.test Service shutting down, closing transmission channel\r\n"),
            "{out}"
        );
        assert_eq!(live.session.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn closing_cuts_a_slow_data_and_discards_the_message() {
        let mut live = Live::start(Duration::from_secs(5), InflightBudget::unlimited(), 100);
        live.send(b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        live.lifecycle.send(Lifecycle::Draining).unwrap();
        live.send(b"\r\nslow").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        live.lifecycle.send(Lifecycle::Closing).unwrap();
        let out = live.rest().await;
        assert!(
            out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 relay.test Service shutting down, closing transmission channel\r\n"),
            "{out}"
        );
        assert!(live.session.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_budget_pays_for_the_message_until_the_handler_has_it() {
        let budget = InflightBudget::new(50);
        let mut live = Live::start(Duration::from_secs(5), budget.clone(), 100);
        let _held = live.budget.try_reserve(20).unwrap();
        // SIZE=40 does not fit the 30 bytes left: the buffer grows instead, and 60 bytes
        // of content cannot be held.
        live.send(b"HELO c\r\nMAIL FROM:<a@x> SIZE=40\r\nRCPT TO:<b@y>\r\nDATA\r\n")
            .await;
        live.send(&[b'x'; 58]).await;
        live.send(
            b"\r\n.\r\nMAIL FROM:<a@x> SIZE=25\r\nRCPT TO:<b@y>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n",
        )
        .await;
        let out = live.rest().await;
        assert!(
            out.contains("354 End data with <CR><LF>.<CR><LF>\r\n452 4.3.1 Insufficient system resources\r\n250 2.1.0 Ok\r\n"),
            "{out}"
        );
        assert!(
            out.ends_with("250 2.0.0 Ok ID\r\n221 2.0.0 Bye\r\n"),
            "{out}"
        );
        let got = live.session.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].content, b"small\r\n");
        assert_eq!(got[0].reservation.bytes(), 25, "sized from SIZE=");
        assert_eq!(budget.in_use(), 45);
        drop(got);
        assert_eq!(budget.in_use(), 20);
    }
}
