//! Where Cosh keeps its sockets: the runtime directory.
//!
//! `$COSH_RUNTIME_DIR` if set; else `$XDG_RUNTIME_DIR/cosh`; else `/run/cosh` for root; else
//! `/tmp/cosh-<uid>`. A directory that exists already is used only if it is a real directory
//! (not a symbolic link) owned by this user and writable by nobody else, so another user
//! cannot squat on the name and intercept connections.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The runtime directory for `uid`, given how to read an environment variable.
pub fn runtime_dir_from(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("COSH_RUNTIME_DIR") {
        return dir;
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return dir.join("cosh");
    }
    if uid == 0 {
        return PathBuf::from("/run/cosh");
    }
    PathBuf::from(format!("/tmp/cosh-{uid}"))
}

/// The runtime directory of this process.
pub fn runtime_dir() -> PathBuf {
    runtime_dir_from(
        |name| std::env::var_os(name),
        rustix::process::geteuid().as_raw(),
    )
}

/// Creates the runtime directory (mode 0700) or checks that the existing one is safe to use.
pub fn ensure_runtime_dir(dir: &Path) -> Result<()> {
    let unsafe_dir = |reason: String| Error::UnsafeRuntimeDir {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| unsafe_dir(format!("cannot create it: {e}")))?;
            // Check what was made (a racing creator could have won).
            ensure_existing(dir, &unsafe_dir)
        }
        Err(e) => Err(unsafe_dir(format!("cannot inspect it: {e}"))),
        Ok(_) => ensure_existing(dir, &unsafe_dir),
    }
}

fn ensure_existing(dir: &Path, unsafe_dir: &dyn Fn(String) -> Error) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| unsafe_dir(format!("cannot inspect it: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others can write to it (mode {:o}); chmod go-w it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}
