//! Free space on the recordings' file system.

use std::path::Path;

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn available(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
