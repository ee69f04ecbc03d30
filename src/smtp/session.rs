//! One SMTP connection's state machine, over any `AsyncRead + AsyncWrite`.
//!
//! The session parses commands with smtp-proto, keeps the transaction (MAIL, RCPT),
//! reads DATA through [`DataDecoder`] and hands the finished message to a [`Handler`]. It
//! knows nothing of SES: every policy decision is the handler's.
//!
//! Replies are queued and written when the session has no complete command left to
//! process, so a pipelining client gets its replies in one write (RFC 2920).

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use smtp_proto::{
    Error as ParseError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS,
    MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom, RcptTo, Request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::data::{DataDecoder, Progress};
use super::reply::{self, Reply};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;
/// After this many refused commands the connection is closed (Postfix's hard error limit).
const MAX_ERRORS: u32 = 20;
const READ_CHUNK: usize = 64 * 1024;

/// The settings one session runs with (a snapshot taken when the connection opens).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Per command, per DATA chunk and per reply write.
    pub idle_timeout: Duration,
    /// Clients that may send without AUTH; everyone else is turned away at connect.
    pub trusted_networks: Vec<IpNet>,
}

impl SessionConfig {
    pub fn is_trusted(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted_networks.iter().any(|net| net.contains(&ip))
    }
}

/// A complete message with its envelope, as the client sent it.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub peer: SocketAddr,
    /// The name given in HELO/EHLO.
    pub helo: String,
    /// True after EHLO, false after HELO.
    pub esmtp: bool,
    /// The reverse path; empty for `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Dot-unstuffed content with CRLF line endings.
    pub content: Vec<u8>,
}

/// What the session asks of the rest of the relay.
pub trait Handler: Send + Sync + 'static {
    /// The settings for a new connection.
    fn session_config(&self) -> Arc<SessionConfig>;
    /// Whether the MAIL FROM address can be relayed (syntax only; no policy).
    fn check_sender(&self, address: &str) -> Result<(), Reply>;
    /// Whether the RCPT TO address can be relayed (syntax only; no policy).
    fn check_recipient(&self, address: &str) -> Result<(), Reply>;
    /// Judges and forwards a complete message; the reply is the client's answer to DATA.
    fn deliver(&self, transaction: Transaction) -> impl Future<Output = Reply> + Send;
}

/// Runs one connection to its end.
pub async fn run<S, H>(
    stream: S,
    peer: SocketAddr,
    handler: &H,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let config = handler.session_config();
    let mut session = Session {
        stream,
        peer,
        config: &config,
        shutdown,
        input: Vec::with_capacity(1024),
        output: Vec::with_capacity(1024),
        discarding: false,
        errors: 0,
        helo: None,
        esmtp: false,
        mail_from: None,
        rcpt_to: Vec::new(),
    };
    session.run(handler).await
}

struct Session<'a, S> {
    stream: S,
    peer: SocketAddr,
    config: &'a SessionConfig,
    shutdown: watch::Receiver<bool>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    /// Skipping the rest of an over-long command line.
    discarding: bool,
    errors: u32,
    helo: Option<String>,
    esmtp: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// What to do after a command.
enum Next {
    Continue,
    Data,
    Close,
}

enum Filled {
    Data,
    Eof,
    Timeout,
    Shutdown,
}

enum Line {
    Command(Vec<u8>),
    TooLong,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn run<H: Handler>(&mut self, handler: &H) -> io::Result<()> {
        if !self.config.is_trusted(&self.peer) {
            tracing::info!(peer = %self.peer, "refused: not in trusted_networks");
            self.reply(&reply::access_denied());
            return self.flush().await;
        }
        self.reply(&reply::greeting(&self.config.hostname));
        loop {
            if self.errors >= MAX_ERRORS {
                self.reply(&Reply::new(
                    421,
                    "4.7.0",
                    "Too many errors, closing connection",
                ));
                return self.flush().await;
            }
            let next = match self.next_line() {
                Some(Line::TooLong) => {
                    self.errors += 1;
                    self.reply(&reply::line_too_long());
                    Next::Continue
                }
                Some(Line::Command(line)) => self.command(&line, handler),
                None => {
                    self.flush().await?;
                    match self.fill(true).await? {
                        Filled::Data => continue,
                        Filled::Eof => return Ok(()),
                        Filled::Timeout => {
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
                Next::Data => {
                    if let Next::Close = self.data(handler).await? {
                        return self.flush().await;
                    }
                }
            }
        }
    }

    /// Takes the next complete command line out of the input, if there is one.
    fn next_line(&mut self) -> Option<Line> {
        match memchr(b'\n', &self.input) {
            Some(pos) => {
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

    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.config.idle_timeout, write).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "reply write timed out",
                ));
            }
        }
        self.output.clear();
        Ok(())
    }

    /// Reads more input; while waiting for a command (`at_command`), a shutdown ends the wait.
    async fn fill(&mut self, at_command: bool) -> io::Result<Filled> {
        self.input.reserve(READ_CHUNK);
        let idle = self.config.idle_timeout;
        let read = tokio::time::timeout(idle, self.stream.read_buf(&mut self.input));
        let shutdown = shutdown_signalled(&mut self.shutdown);
        tokio::select! {
            biased;
            () = shutdown, if at_command => Ok(Filled::Shutdown),
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
        self.rcpt_to.clear();
    }

    fn command<H: Handler>(&mut self, line: &[u8], handler: &H) -> Next {
        let request = Request::parse(&mut line.iter());
        let reply = match request {
            Ok(request) => match self.request(request, handler) {
                Ok(next) => return next,
                Err(reply) => reply,
            },
            Err(e) => parse_error_reply(&e),
        };
        if !reply.is_positive() {
            self.errors += 1;
        }
        self.reply(&reply);
        Next::Continue
    }

    /// One parsed command. `Ok` means the replies are queued; `Err` is a refusal.
    fn request<H: Handler>(
        &mut self,
        request: Request<Cow<'_, str>>,
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
                self.mail(&from, handler)?;
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
            Request::Auth { .. } => return Err(reply::auth_not_enabled()),
            Request::Lhlo { .. } => return Err(reply::unknown_command()),
            Request::StartTls
            | Request::Expn { .. }
            | Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => return Err(reply::not_implemented()),
        }
        Ok(Next::Continue)
    }

    fn ehlo(&mut self) {
        let lines = [
            self.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    fn mail<H: Handler>(
        &mut self,
        from: &MailFrom<Cow<'_, str>>,
        handler: &H,
    ) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(reply::need_helo());
        }
        if self.mail_from.is_some() {
            return Err(reply::nested_mail());
        }
        if let Some(param) = unsupported_mail_parameter(from) {
            return Err(reply::unsupported_parameter(param));
        }
        if from.size > self.config.max_message_size {
            return Err(reply::message_too_long());
        }
        let address = from.address.as_ref();
        if !address.is_empty() {
            if !address.is_ascii() {
                return Err(reply::non_ascii_address());
            }
            handler.check_sender(address)?;
        }
        self.mail_from = Some(address.to_owned());
        Ok(())
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
        let mut decoder = DataDecoder::new(self.config.max_message_size);
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
            match self.fill(false).await? {
                Filled::Data => {}
                Filled::Eof | Filled::Shutdown => {
                    tracing::info!(peer = %self.peer, "client went away during DATA; message discarded");
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
        let reply = if decoder.is_oversized() {
            tracing::info!(peer = %self.peer, from = %mail_from, "message over max_message_size refused");
            reply::message_too_long()
        } else {
            let transaction = Transaction {
                peer: self.peer,
                helo: self.helo.clone().unwrap_or_default(),
                esmtp: self.esmtp,
                mail_from,
                rcpt_to,
                content: decoder.into_content(),
            };
            handler.deliver(transaction).await
        };
        self.reply(&reply);
        Ok(Next::Continue)
    }
}

/// Resolves when the shutdown flag is (or becomes) set; never, if its sender is gone.
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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

    use tokio::io::AsyncReadExt;

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
    }

    /// Feeds `input` to a session from 127.0.0.1 (then EOF); returns everything it wrote.
    async fn dialogue(input: &[u8]) -> (String, Vec<Transaction>) {
        dialogue_from("127.0.0.1:4000".parse().unwrap(), input).await
    }

    /// The same from `peer`; only 127.0.0.0/8 is trusted.
    async fn dialogue_from(peer: SocketAddr, input: &[u8]) -> (String, Vec<Transaction>) {
        let recorder = Recorder {
            config: Arc::new(SessionConfig {
                hostname: "relay.test".into(),
                max_message_size: 100,
                max_recipients: 2,
                idle_timeout: Duration::from_secs(5),
                trusted_networks: vec!["127.0.0.0/8".parse().unwrap()],
            }),
            got: Mutex::new(Vec::new()),
        };
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(input).await.unwrap();
        client_write.shutdown().await.unwrap();
        let (_stop, stopped) = watch::channel(false);
        run(server, peer, &recorder, stopped).await.unwrap();
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.unwrap();
        (out, recorder.got.into_inner().unwrap())
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
            "220 2.0.0 relay.test ESMTP sesrelay\r\n250-relay.test\r\n250-PIPELINING\r\n\
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
}
