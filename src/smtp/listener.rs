//! The accept loop: connection limit, one task per connection, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::reply;
use super::session::{self, Handler};

/// Accepts connections on every listener until `shutdown` is set, then waits for the
/// sessions in flight to finish (each one answers its next command with 421 4.3.2).
pub async fn serve<H: Handler>(
    listeners: Vec<TcpListener>,
    max_connections: usize,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        acceptors.spawn(accept_loop(
            listener,
            Arc::clone(&slots),
            Arc::clone(&handler),
            shutdown.clone(),
        ));
    }
    while acceptors.join_next().await.is_some() {}
    // Every session holds a slot: all slots back means every session has ended.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: max_connections reached");
            tokio::spawn(async move {
                let mut out = Vec::new();
                reply::too_many_connections().write_to(&mut out);
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&out)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let handler = Arc::clone(&handler);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "connection opened");
            if let Err(e) = session::run(&mut stream, peer, handler.as_ref(), shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            let _ = stream.shutdown().await;
            drop(slot);
        });
    }
}
