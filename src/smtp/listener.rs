//! The accept loop: connection limit, one task per connection, the in-flight budget,
//! implicit TLS, and shutdown in two steps (drain, then close at `shutdown_timeout`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::budget::InflightBudget;
use super::reply;
use super::session::{self, Context, Event, Handler, Lifecycle};
use crate::tls::Tls;

/// How long the sessions closed at `shutdown_timeout` get to write their 421 and end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The bounds one listener group serves under (`[server]` of the config).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Beyond this, a new connection gets 421 4.7.0 and is closed.
    pub max_connections: usize,
    /// After shutdown is signalled, how long sessions may go on before they are closed.
    pub shutdown_timeout: Duration,
    /// Pays for the DATA buffers of all sessions together (`max_inflight_bytes`).
    pub budget: InflightBudget,
    /// The certificate for STARTTLS and the implicit-TLS listeners (`[tls]`).
    pub tls: Option<Arc<Tls>>,
}

/// Accepts connections on every listener until `shutdown` is set; then stops accepting,
/// lets the sessions finish their messages in flight (each answers its next command with
/// 421 4.3.2), and closes those still open after `shutdown_timeout`. Returns when every
/// session has ended, at the latest shortly after `shutdown_timeout`.
///
/// On `tls_listeners` (implicit TLS, `listen_tls`) the TLS handshake comes first, within
/// `idle_timeout`; they need `limits.tls`, and are not served without it.
pub async fn serve<H: Handler>(
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    limits: Limits,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A semaphore has a bounded number of permits, and they are taken back in one u32.
    let max_connections = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (lifecycle, watching) = watch::channel(Lifecycle::Serving);
    let context = Context {
        budget: limits.budget.clone(),
        lifecycle: watching,
        tls: limits.tls.clone(),
    };
    let mut acceptors = JoinSet::new();
    let implicit = match &limits.tls {
        Some(tls) => tls_listeners
            .into_iter()
            .map(|l| (l, Some(Arc::clone(tls))))
            .collect(),
        None => {
            if !tls_listeners.is_empty() {
                tracing::error!("implicit-TLS listeners without a certificate are not served");
            }
            Vec::new()
        }
    };
    let all = listeners.into_iter().map(|l| (l, None)).chain(implicit);
    for (listener, implicit_tls) in all {
        acceptors.spawn(accept_loop(
            listener,
            implicit_tls,
            Arc::clone(&slots),
            Arc::clone(&handler),
            context.clone(),
        ));
    }
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        // Nobody can ask for a stop any more: serve for as long as the listeners do.
        while acceptors.join_next().await.is_some() {}
    }
    let _ = lifecycle.send(Lifecycle::Draining);
    while acceptors.join_next().await.is_some() {}

    // Every session holds a slot: all slots back means every session has ended.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let open = max_connections - slots.available_permits();
    if open > 0 {
        tracing::info!(
            sessions = open,
            shutdown_timeout = ?limits.shutdown_timeout,
            "waiting for the sessions in flight"
        );
    }
    if tokio::time::timeout(limits.shutdown_timeout, slots.acquire_many(all))
        .await
        .is_ok()
    {
        return;
    }
    let open = max_connections - slots.available_permits();
    tracing::warn!(
        sessions = open,
        "shutdown_timeout reached: closing the sessions still open"
    );
    let _ = lifecycle.send(Lifecycle::Closing);
    if tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = max_connections - slots.available_permits();
        tracing::warn!(sessions = open, "sessions did not end in time; abandoned");
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    implicit_tls: Option<Arc<Tls>>,
    slots: Arc<Semaphore>,
    handler: Arc<H>,
    context: Context,
) {
    let mut stopping = context.lifecycle.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|phase| *phase >= Lifecycle::Draining) => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        handler.observe(Event::Accepted);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: max_connections reached");
            handler.observe(Event::RefusedMaxConnections);
            if implicit_tls.is_some() {
                // A TLS client cannot read a plaintext 421: it is just closed.
                drop(stream);
                continue;
            }
            tokio::spawn(async move {
                let mut out = Vec::new();
                reply::too_many_connections().write_to(&mut out);
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&out)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let handler = Arc::clone(&handler);
        let context = context.clone();
        let implicit_tls = implicit_tls.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "connection opened");
            let _open = OpenSession::new(Arc::clone(&handler));
            let result = match implicit_tls {
                None => session::run(stream, peer, handler.as_ref(), context).await,
                Some(tls) => {
                    let idle = handler.session_config().idle_timeout;
                    match tokio::time::timeout(idle, tls.acceptor().accept(stream)).await {
                        Ok(Ok(stream)) => {
                            session::run_tls(stream, peer, handler.as_ref(), context).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::info!(%peer, "idle_timeout during the TLS handshake");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Reports [`Event::SessionStarted`] when made and [`Event::SessionEnded`] when dropped,
/// however the session's task ends.
struct OpenSession<H: Handler>(Arc<H>);

impl<H: Handler> OpenSession<H> {
    fn new(handler: Arc<H>) -> Self {
        handler.observe(Event::SessionStarted);
        OpenSession(handler)
    }
}

impl<H: Handler> Drop for OpenSession<H> {
    fn drop(&mut self) {
        self.0.observe(Event::SessionEnded);
    }
}
