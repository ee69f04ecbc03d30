//! Reloading the configuration when its file changes (SPEC 7).
//!
//! The watch is on the file's **directory**, not the file: editors save by writing a new
//! file and renaming it over the old one, and a Kubernetes ConfigMap volume swaps its
//! `..data` symlink; a watch on the old inode would see neither. Any event in the directory
//! makes the relay read the file again after a short pause (a burst of events is one
//! reload); a file that reads as it did last time is not a change ([`Relay::reload`]), so
//! the API's own writes and unrelated files cost one read.
//!
//! When the system cannot watch (no inotify instances left, say), the file is polled
//! instead, every [`POLL_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{Notify, watch};

use crate::relay::Relay;

/// How long after an event the file is read: editors and ConfigMaps change a directory in
/// several steps.
const SETTLE: Duration = Duration::from_millis(150);

/// How often the file is read when the directory cannot be watched.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The directory to watch for `config`: its parent (`.` for a bare file name).
fn directory_of(config: &Path) -> PathBuf {
    match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Watches the configuration file's directory until `shutdown`, reloading on changes.
pub fn watch_config(
    relay: Arc<Relay>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let path = relay.config().path.clone();
    let dir = directory_of(&path);
    let changed = Arc::new(Notify::new());
    let watcher = {
        let changed = Arc::clone(&changed);
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Errors too: after one, the only safe thing is to read the file again.
            let _ = event;
            changed.notify_one();
        })
        .and_then(|mut w| {
            w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        })
    };
    let watcher = match watcher {
        Ok(w) => {
            tracing::debug!(dir = %dir.display(), "watching the configuration's directory");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(), error = %e,
                "cannot watch the configuration's directory; reading the file every {}s instead",
                POLL_INTERVAL.as_secs()
            );
            None
        }
    };
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let polling = watcher.is_none();
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL), if polling => {}
            }
            tokio::time::sleep(SETTLE).await;
            // Reload errors are logged and counted by the relay.
            let _ = relay.reload(false).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_of_a_bare_name_is_the_working_directory() {
        assert_eq!(directory_of(Path::new("sesrelay.toml")), PathBuf::from("."));
        assert_eq!(
            directory_of(Path::new("/etc/sesrelay/sesrelay.toml")),
            PathBuf::from("/etc/sesrelay")
        );
    }
}
