//! The directory upstream: one `.eml` file per message, with its envelope beside it.
//!
//! Each file is written under a temporary name, fsynced, then renamed, and the directory
//! is fsynced: a `<id>.eml` that exists is complete and durable. The envelope goes first
//! to `<id>.envelope.json`, so that it is there whenever the `.eml` is.

use std::fs::{self, File};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use super::{DeliveryError, Envelope, UpstreamError};
use crate::message::Forwarded;

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
        message: Forwarded,
    ) -> Result<String, DeliveryError> {
        let dir = self.path.clone();
        let id = id.to_owned();
        let envelope_json = serde_json::json!({
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_to,
        })
        .to_string();
        // The message moves into the writer: its parts are written as they are, no copy.
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            write_durably(&dir, &format!("{id}.envelope.json"), |file| {
                file.write_all(envelope_json.as_bytes())
            })?;
            let eml = write_durably(&dir, &format!("{id}.eml"), |file| {
                let parts: Vec<IoSlice<'_>> = message.parts().map(IoSlice::new).collect();
                write_all_vectored(file, parts)
            })?;
            File::open(&dir)?.sync_all()?;
            Ok(eml)
        })
        .await;
        match written {
            Ok(Ok(path)) => Ok(format!("written to {}", path.display())),
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %self.path.display(), "cannot write the message file");
                Err(DeliveryError::LocalIo(e.to_string()))
            }
            Err(e) => {
                tracing::error!(error = %e, "message writer task failed");
                Err(DeliveryError::LocalIo(e.to_string()))
            }
        }
    }
}

impl DirUpstream {
    /// Checks that a message could be written: a new file is created in the directory
    /// (a hidden name no message has) and removed again.
    pub async fn probe(&self) -> Result<(), DeliveryError> {
        let probe = self.path.join(format!(
            ".sesrelay-probe-{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let checked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            File::create_new(&probe)?;
            fs::remove_file(&probe)
        })
        .await;
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DeliveryError::LocalIo(format!(
                "cannot write in {}: {e}",
                self.path.display()
            ))),
            Err(e) => Err(DeliveryError::LocalIo(e.to_string())),
        }
    }
}

/// `write_all` for a list of slices, with as few system calls as the kernel allows.
fn write_all_vectored(file: &mut File, mut parts: Vec<IoSlice<'_>>) -> std::io::Result<()> {
    let mut slices = &mut parts[..];
    while !slices.is_empty() {
        let n = file.write_vectored(slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Writes `name` in `dir` through a temporary file: write, fsync, rename.
fn write_durably(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, &done)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| done)
}
