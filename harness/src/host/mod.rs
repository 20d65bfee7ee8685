//! Everything that touches the machine the harness runs on: which filesystem a directory is
//! on, the THP sysfs tree, /proc observations, the settings journal, the swapfile, and the host
//! backend with its isolated case processes.

pub mod backend;
pub mod crash_point;
pub mod decisions;
pub mod fsinfo;
pub mod isolate;
pub mod journal;
pub mod kthread;
pub mod probe;
pub mod proc;
pub mod ranges;
pub mod scenario;
pub mod signals;
pub mod swapfile;
pub mod sysfs;
pub mod tracefs;

/// Creates a new file readable and writable by the owner only (mode 0600), refusing to reuse
/// an existing name (O_EXCL) or to follow a symlink (O_NOFOLLOW).
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}
