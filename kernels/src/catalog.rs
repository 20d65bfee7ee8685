//! The kernels of the matrix: one Debian package per series, pinned to the version the
//! fixtures were recorded on, and where the cache lives.

use std::path::PathBuf;

/// One kernel of the matrix.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The series, which is also the name on the command line (`6.1`, `7.3`).
    pub series: &'static str,
    /// The Debian binary package holding the kernel (newer ones pull linux-binary-* and
    /// linux-modules-* of the same version).
    pub package: &'static str,
    /// The suite it comes from.
    pub suite: &'static str,
}

/// Every kernel series from Debian stable's 6.1 to experimental's newest.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        series: "6.1",
        package: "linux-image-6.1.0-50-amd64",
        suite: "bookworm",
    },
    Kernel {
        series: "6.12",
        package: "linux-image-6.12.95+deb12-amd64",
        suite: "bookworm-backports",
    },
    Kernel {
        series: "6.16",
        package: "linux-image-6.16.12+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "6.17",
        package: "linux-image-6.17.13+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "6.18",
        package: "linux-image-6.18.15+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "6.19",
        package: "linux-image-6.19.14+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "7.0",
        package: "linux-image-7.0.13+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "7.1",
        package: "linux-image-7.1.13+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "7.2",
        package: "linux-image-7.2.12+deb13-amd64",
        suite: "trixie-backports",
    },
    Kernel {
        series: "7.3",
        package: "linux-image-7.3.4+deb13-amd64",
        suite: "trixie-backports",
    },
];

/// The suites of the private apt configuration (never the system's).
pub const SUITES: &[&str] = &[
    "bookworm",
    "bookworm-backports",
    "trixie-backports",
    "sid",
    "experimental",
];

/// The archive the machine's own apt sources use.
pub const ARCHIVE: &str = "http://deb.debian.org/debian";

/// Finds a kernel by series (`6.12`) or package name.
pub fn find(name: &str) -> Result<&'static Kernel, String> {
    KERNELS
        .iter()
        .find(|k| k.series == name || k.package == name)
        .ok_or_else(|| {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.series).collect();
            format!(
                "unknown kernel {name:?}: expected one of {} (ci/kernels list)",
                names.join(", ")
            )
        })
}

/// The cache: $KHUGEPAGED_KERNELS_CACHE, else /var/cache/khugepaged-kernels (root) or
/// $XDG_CACHE_HOME/khugepaged-kernels.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KHUGEPAGED_KERNELS_CACHE") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/khugepaged-kernels");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("khugepaged-kernels")
}

/// The workspace this tool was built from (fixtures/, the harness sources).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
