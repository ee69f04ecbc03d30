//! The directory upstream: one `.eml` file per message, with its envelope beside it.
//!
//! Each file is written under a temporary name, fsynced, then renamed, and the directory
//! is fsynced: a `<id>.eml` that exists is complete and durable. The envelope goes first
//! to `<id>.envelope.json`, so that it is there whenever the `.eml` is.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{DeliveryError, Envelope, UpstreamError};
use crate::smtp::reply;

#[derive(Debug)]
pub struct DirUpstream {
    path: PathBuf,
}

impl DirUpstream {
    pub fn new(path: &Path) -> Result<DirUpstream, UpstreamError> {
        fs::create_dir_all(path).map_err(|source| UpstreamError::Dir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(DirUpstream {
            path: path.to_owned(),
        })
    }

    pub async fn deliver(
        &self,
        id: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, DeliveryError> {
        let dir = self.path.clone();
        let id = id.to_owned();
        let envelope_json = serde_json::json!({
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_to,
        })
        .to_string();
        let message = message.to_vec();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            write_durably(
                &dir,
                &format!("{id}.envelope.json"),
                envelope_json.as_bytes(),
            )?;
            let eml = write_durably(&dir, &format!("{id}.eml"), &message)?;
            File::open(&dir)?.sync_all()?;
            Ok(eml)
        })
        .await;
        match written {
            Ok(Ok(path)) => Ok(format!("written to {}", path.display())),
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %self.path.display(), "cannot write the message file");
                Err(DeliveryError::Transient(reply::local_error()))
            }
            Err(e) => {
                tracing::error!(error = %e, "message writer task failed");
                Err(DeliveryError::Transient(reply::local_error()))
            }
        }
    }
}

/// Writes `name` in `dir` through a temporary file: write, fsync, rename.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &done)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| done)
}
