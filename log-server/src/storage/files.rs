//! Opening the store's files, shared by the embedded store and its hash indexes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::StoreError;

/// Opens (or creates) one of the store's files, never through a symbolic link.
pub fn open_file(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| StoreError::io(path.display().to_string(), e))
}
