//! What this machine allows: root, THP, MADV_COLLAPSE, CONFIG_READ_ONLY_THP_FOR_FS.

use std::sync::OnceLock;

/// What a host run finds before its first case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Cases can run; the message says what an interrupted earlier run left and was restored.
    Ready(Option<String>),
    /// No case can run here (not root, no THP, no MADV_COLLAPSE): the selftest prints this once
    /// and exits with KSFT_SKIP.
    SkipAll(String),
    /// An interrupted run's journal could not be used: nothing may run until a person looks.
    Broken(String),
}

/// The first thing a host run does, once per process: under the host lock, restore what a
/// killed run left, then probe the machine. Both under the lock: before recovery, a killed
/// run's `enabled=never` would look like "no THP"; without the lock, another run's
/// MADV_COLLAPSE step (which sets `enabled=never` for a while) would.
pub fn preflight() -> Preflight {
    static DONE: OnceLock<Preflight> = OnceLock::new();
    DONE.get_or_init(|| {
        // Until the end of recovery SIGINT and friends only set a flag: nothing is left
        // half-done.
        let signals = super::signals::DeferSignals::new();
        let root = nix::unistd::geteuid().is_root();
        let lock = if root {
            match super::journal::HostLock::acquire() {
                Ok(l) => Some(l),
                Err(e) => {
                    // A signal while waiting for the lock interrupts the wait.
                    super::signals::exit_if_interrupted();
                    return Preflight::Broken(e);
                }
            }
        } else {
            None
        };
        let restored = super::journal::recover_leftover();
        let p = match restored {
            Err(e) => Preflight::Broken(e),
            Ok(restored) => match probe() {
                Some(reason) => Preflight::SkipAll(reason),
                None => Preflight::Ready(restored),
            },
        };
        drop(lock);
        drop(signals);
        p
    })
    .clone()
}

/// Why host cases cannot run here at all, or None when they can (or when only a person can
/// tell: a broken journal, which [`preflight`] reports).
pub fn host_unsupported_reason() -> Option<String> {
    match preflight() {
        Preflight::SkipAll(reason) => Some(reason),
        Preflight::Ready(_) | Preflight::Broken(_) => None,
    }
}

fn probe() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("the host backend needs Linux".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "not root: the host cases write THP sysfs settings, read pagemap PFNs and manage swap"
                .into(),
        );
    }
    if std::fs::metadata(super::sysfs::THP_ROOT).is_err() {
        return Some("no /sys/kernel/mm/transparent_hugepage: this kernel has no THP".into());
    }
    let enabled = super::sysfs::read("enabled").map(|v| crate::thp_settings::selected(&v));
    if !matches!(enabled.as_deref(), Ok("always") | Ok("madvise")) {
        // thp_is_enabled() in khugepaged.c: the selftest skips everything then.
        return Some(format!(
            "Transparent Hugepages not available (enabled={})",
            enabled.unwrap_or_default()
        ));
    }
    if !madv_collapse_supported() {
        return Some("MADV_COLLAPSE is not supported by this kernel (before 6.1)".into());
    }
    None
}

/// Tries MADV_COLLAPSE on a private 2 MiB range: anything but EINVAL means the kernel knows it.
fn madv_collapse_supported() -> bool {
    let len = 4 * model::HPAGE_PMD_SIZE as usize;
    // SAFETY: a fresh private anonymous mapping, unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        let aligned = ((p as usize + model::HPAGE_PMD_SIZE as usize - 1)
            & !(model::HPAGE_PMD_SIZE as usize - 1)) as *mut u8;
        std::ptr::write_volatile(aligned, 1);
        let r = libc::madvise(
            aligned as *mut libc::c_void,
            model::HPAGE_PMD_SIZE as usize,
            25,
        );
        let err = std::io::Error::last_os_error().raw_os_error();
        libc::munmap(p, len);
        r == 0 || err != Some(libc::EINVAL)
    }
}

/// Whether khugepaged and MADV_COLLAPSE may collapse regular files on a disk filesystem:
/// CONFIG_READ_ONLY_THP_FOR_FS=y, or a kernel whose config no longer has that option at all
/// (it was removed when file collapse stopped depending on it; Debian's 7.3 config has no
/// such line, where 6.1 and 6.12 say "is not set"). From /boot/config-$(uname -r), else
/// /proc/config.gz.
pub fn read_only_thp_for_fs() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{release}")) {
            return config_allows_file_collapse(&text);
        }
        procfs::kernel_config()
            .ok()
            .and_then(|c| c.get("CONFIG_READ_ONLY_THP_FOR_FS").cloned())
            .is_some_and(|v| v == procfs::ConfigSetting::Yes)
    })
}

/// See `read_only_thp_for_fs`: a THP kernel's config text.
pub fn config_allows_file_collapse(config: &str) -> bool {
    let mut mentioned = false;
    for line in config.lines() {
        if line == "CONFIG_READ_ONLY_THP_FOR_FS=y" {
            return true;
        }
        mentioned |= line.contains("CONFIG_READ_ONLY_THP_FOR_FS");
    }
    !mentioned && config.lines().any(|l| l == "CONFIG_TRANSPARENT_HUGEPAGE=y")
}

#[cfg(test)]
mod tests {
    use super::config_allows_file_collapse;

    #[test]
    fn file_collapse_from_config() {
        let thp = "CONFIG_TRANSPARENT_HUGEPAGE=y\n";
        assert!(config_allows_file_collapse(&format!(
            "{thp}CONFIG_READ_ONLY_THP_FOR_FS=y\n"
        )));
        assert!(!config_allows_file_collapse(&format!(
            "{thp}# CONFIG_READ_ONLY_THP_FOR_FS is not set\n"
        )));
        assert!(config_allows_file_collapse(thp));
        assert!(!config_allows_file_collapse(
            "# CONFIG_TRANSPARENT_HUGEPAGE is not set\n"
        ));
    }
}
