//! Wiring: a [`Config`] becomes a relay with bound listeners, run until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::verification::VerificationError;
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::relay::{Relay, RelayError};
use crate::smtp::InflightBudget;
use crate::smtp::listener::{self, Limits};
use crate::suppression::SuppressionError;
use crate::tls::{RELOAD_INTERVAL, Tls, TlsError};
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Suppression(#[from] SuppressionError),
    #[error(transparent)]
    Verification(#[from] VerificationError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Shared(crate::shared::SharedError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<RelayError> for ServerError {
    fn from(e: RelayError) -> ServerError {
        match e {
            RelayError::Upstream(e) => ServerError::Upstream(e),
            RelayError::Suppression(e) => ServerError::Suppression(e),
            RelayError::Shared(e) => ServerError::Shared(e),
        }
    }
}

/// A relay whose listeners are bound (so tests can bind port 0 and read the port back).
pub struct Server {
    relay: Arc<Relay>,
    listeners: Vec<TcpListener>,
    /// Implicit TLS (`listen_tls`).
    tls_listeners: Vec<TcpListener>,
    /// The certificate, when `[tls]` is configured.
    tls: Option<Arc<Tls>>,
    /// The admin API, when `[admin]` is configured.
    admin: Option<(TcpListener, AdminState)>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        crate::fdlimit::raise_nofile_limit();
        let mut listeners = Vec::with_capacity(config.server.listen.len());
        for &addr in &config.server.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let tls = match &config.tls {
            Some(tls) => Some(Tls::load(&tls.cert, &tls.key)?),
            None => None,
        };
        let mut tls_listeners = Vec::with_capacity(config.server.listen_tls.len());
        for &addr in &config.server.listen_tls {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            tls_listeners.push(listener);
        }
        let admin_addr = config.admin.as_ref().map(|a| a.listen);
        let relay = Arc::new(Relay::new(config)?);
        let admin = match admin_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?;
                Some((listener, AdminState::new(Arc::clone(&relay))?))
            }
            None => None,
        };
        Ok(Server {
            relay,
            listeners,
            tls_listeners,
            tls,
            admin,
        })
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The implicit-TLS addresses actually bound (port 0 resolved).
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Serves until `shutdown` is set, then lets the sessions in flight finish. The admin
    /// listener answers `/healthz/ready` with 503 from the moment `shutdown` is set, and
    /// goes on serving until the SMTP sessions have ended.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        // Tests and scripts read the bound addresses (port 0 resolved) from these lines:
        // the address is the last word of the message.
        for addr in self.local_addrs() {
            tracing::info!("listening for SMTP on {addr}");
        }
        for addr in self.tls_addrs() {
            tracing::info!("listening for SMTP over implicit TLS on {addr}");
        }
        let watcher = self.tls.as_ref().map(|tls| tls.watch(RELOAD_INTERVAL));
        let config_watcher = crate::reload::watch_config(Arc::clone(&self.relay), shutdown.clone());
        // Readiness turns 503 as soon as a stop is asked for.
        let draining = {
            let relay = Arc::clone(&self.relay);
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                if shutdown.wait_for(|stop| *stop).await.is_ok() {
                    relay.health().start_draining();
                }
            })
        };
        // The admin listener stops after the SMTP side, so that probes see the drain.
        let (admin_stop, admin_stopped) = watch::channel(false);
        let admin = self.admin.map(|(listener, state)| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("listening for the SES v2 API on {addr}");
            }
            tokio::spawn(admin::serve(listener, state, admin_stopped))
        });
        let limits = {
            let config = self.relay.config();
            let budget = InflightBudget::new(config.server.max_inflight_bytes);
            self.relay.metrics().watch_budget(&budget);
            Limits {
                max_connections: config.server.max_connections,
                shutdown_timeout: config.server.shutdown_timeout,
                budget,
                tls: self.tls,
            }
        };
        let relay = Arc::clone(&self.relay);
        listener::serve(
            self.listeners,
            self.tls_listeners,
            limits,
            self.relay,
            shutdown,
        )
        .await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        config_watcher.abort();
        draining.abort();
        relay.health().start_draining();
        let _ = admin_stop.send(true);
        if let Some(admin) = admin {
            match admin.await {
                Ok(Err(e)) => tracing::error!(error = %e, "the admin listener failed"),
                Err(e) => tracing::error!(error = %e, "the admin listener task failed"),
                Ok(Ok(())) => {}
            }
        }
        // The event records still queued get a short grace (SPEC 8: publishing never holds
        // the process for long).
        let grace = relay
            .config()
            .server
            .shutdown_timeout
            .min(crate::events::publish::SHUTDOWN_GRACE);
        relay.events().close(grace).await;
        tracing::info!("all sessions ended");
    }
}
