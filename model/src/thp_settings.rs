//! The THP sysfs tree (/sys/kernel/mm/transparent_hugepage), as the selftests' thp_settings.c
//! reads and writes it. Values parse from and print to the same strings as sysfs.

use std::fmt;
use std::str::FromStr;

/// `enabled` / `defrag`-style global anonymous THP mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpEnabled {
    Always,
    Madvise,
    Never,
}

/// Per-size `hugepages-<N>kB/enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpOrderEnabled {
    Always,
    Inherit,
    Madvise,
    Never,
}

/// `shmem_enabled` (global) and the tmpfs `huge=` mount option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmemEnabled {
    Always,
    WithinSize,
    Advise,
    Never,
    Deny,
    Force,
}

/// Per-size `hugepages-<N>kB/shmem_enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmemOrderEnabled {
    Always,
    Inherit,
    WithinSize,
    Advise,
    Never,
}

/// `defrag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpDefrag {
    Always,
    Defer,
    DeferMadvise,
    Madvise,
    Never,
}

macro_rules! sysfs_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order sysfs lists them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The sysfs spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let s = s.trim();
                // Accept both a bare value and sysfs's "a [b] c" listing.
                let chosen = match (s.find('['), s.find(']')) {
                    (Some(a), Some(b)) if a < b => &s[a + 1..b],
                    _ => s,
                };
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == chosen)
                    .ok_or_else(|| {
                        let allowed: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                        format!("'{}' is not one of: {}", s, allowed.join(", "))
                    })
            }
        }
    };
}

sysfs_enum!(ThpEnabled { Always => "always", Madvise => "madvise", Never => "never" });
sysfs_enum!(ThpOrderEnabled {
    Always => "always", Inherit => "inherit", Madvise => "madvise", Never => "never"
});
sysfs_enum!(ShmemEnabled {
    Always => "always", WithinSize => "within_size", Advise => "advise", Never => "never",
    Deny => "deny", Force => "force"
});
sysfs_enum!(ShmemOrderEnabled {
    Always => "always", Inherit => "inherit", WithinSize => "within_size", Advise => "advise",
    Never => "never"
});
sysfs_enum!(ThpDefrag {
    Always => "always", Defer => "defer", DeferMadvise => "defer+madvise",
    Madvise => "madvise", Never => "never"
});

/// Anonymous mTHP orders that have a `hugepages-<N>kB` directory (16 KiB .. 2 MiB).
pub const ANON_ORDERS: std::ops::RangeInclusive<u8> = 2..=crate::HPAGE_PMD_ORDER;

/// `/sys/kernel/mm/transparent_hugepage/khugepaged/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KhugepagedSettings {
    pub defrag: bool,
    pub max_ptes_none: u32,
    pub max_ptes_swap: u32,
    pub max_ptes_shared: u32,
    pub pages_to_scan: u32,
    pub scan_sleep_millisecs: u32,
    pub alloc_sleep_millisecs: u32,
}

impl Default for KhugepagedSettings {
    /// Boot defaults (also what a fresh machine here has).
    fn default() -> Self {
        KhugepagedSettings {
            defrag: true,
            max_ptes_none: 511,
            max_ptes_swap: 64,
            max_ptes_shared: 256,
            pages_to_scan: 4096,
            scan_sleep_millisecs: 10000,
            alloc_sleep_millisecs: 60000,
        }
    }
}

/// The writable THP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThpSettings {
    pub enabled: ThpEnabled,
    pub defrag: ThpDefrag,
    pub shmem_enabled: ShmemEnabled,
    pub use_zero_page: bool,
    /// `hugepages-<N>kB/enabled`, indexed by order (entries below order 2 are unused).
    pub anon_orders: [ThpOrderEnabled; crate::HPAGE_PMD_ORDER as usize + 1],
    /// `hugepages-<N>kB/shmem_enabled`, indexed by order.
    pub shmem_orders: [ShmemOrderEnabled; crate::HPAGE_PMD_ORDER as usize + 1],
    pub khugepaged: KhugepagedSettings,
}

impl Default for ThpSettings {
    /// This host's settings at boot: enabled=madvise, defrag=madvise, shmem_enabled=never,
    /// PMD size inherit, every other size never.
    fn default() -> Self {
        let mut anon_orders = [ThpOrderEnabled::Never; crate::HPAGE_PMD_ORDER as usize + 1];
        anon_orders[crate::HPAGE_PMD_ORDER as usize] = ThpOrderEnabled::Inherit;
        let mut shmem_orders = [ShmemOrderEnabled::Never; crate::HPAGE_PMD_ORDER as usize + 1];
        shmem_orders[crate::HPAGE_PMD_ORDER as usize] = ShmemOrderEnabled::Inherit;
        ThpSettings {
            enabled: ThpEnabled::Madvise,
            defrag: ThpDefrag::Madvise,
            shmem_enabled: ShmemEnabled::Never,
            use_zero_page: true,
            anon_orders,
            shmem_orders,
            khugepaged: KhugepagedSettings::default(),
        }
    }
}

impl ThpSettings {
    /// Size directory name of an order, e.g. 9 -> "hugepages-2048kB".
    pub fn order_dir(order: u8) -> String {
        format!("hugepages-{}kB", (crate::PAGE_SIZE << order) / 1024)
    }

    /// Anonymous orders allowed for a VMA outside a forced collapse (§3.1 of the reference):
    /// always, plus madvise if VM_HUGEPAGE, plus inherit if the global setting admits it.
    pub fn anon_orders_mask(&self, vm_hugepage: bool) -> u32 {
        let global_enabled = self.enabled != ThpEnabled::Never;
        let global_always = self.enabled == ThpEnabled::Always;
        let mut mask = 0;
        for order in ANON_ORDERS {
            let allowed = match self.anon_orders[order as usize] {
                ThpOrderEnabled::Always => true,
                ThpOrderEnabled::Madvise => vm_hugepage,
                ThpOrderEnabled::Inherit => global_always || (vm_hugepage && global_enabled),
                ThpOrderEnabled::Never => false,
            };
            if allowed {
                mask |= 1 << order;
            }
        }
        mask
    }
}

use crate::errno::Errno;
use crate::kernel::Kernel;

/// The files under /sys/kernel/mm/transparent_hugepage that hold one value each.
fn khugepaged_field<'a>(k: &'a mut KhugepagedSettings, name: &str) -> Option<&'a mut u32> {
    Some(match name {
        "max_ptes_none" => &mut k.max_ptes_none,
        "max_ptes_swap" => &mut k.max_ptes_swap,
        "max_ptes_shared" => &mut k.max_ptes_shared,
        "pages_to_scan" => &mut k.pages_to_scan,
        "scan_sleep_millisecs" => &mut k.scan_sleep_millisecs,
        "alloc_sleep_millisecs" => &mut k.alloc_sleep_millisecs,
        _ => return None,
    })
}

/// Parses `hugepages-<N>kB` into an order.
fn size_dir_order(dir: &str) -> Option<u8> {
    let kb: u64 = dir
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    (1..=crate::HPAGE_PMD_ORDER).find(|&o| (crate::PAGE_SIZE << o) / 1024 == kb)
}

/// Renders a sysfs choice file: every value, the selected one in brackets.
fn choices<T: Copy + PartialEq + fmt::Display>(all: &[T], cur: T) -> String {
    all.iter()
        .map(|v| {
            if *v == cur {
                format!("[{v}]")
            } else {
                v.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Kernel {
    /// Reads a THP sysfs file by its path below /sys/kernel/mm/transparent_hugepage, as the
    /// kernel prints it. ENOENT for unknown files.
    pub fn sysfs_read(&self, path: &str) -> Result<String, Errno> {
        let t = &self.thp;
        let mut parts = path.trim_matches('/').splitn(2, '/');
        let (first, rest) = (parts.next().unwrap_or(""), parts.next());
        Ok(match (first, rest) {
            ("enabled", None) => choices(ThpEnabled::ALL, t.enabled),
            ("defrag", None) => choices(ThpDefrag::ALL, t.defrag),
            ("shmem_enabled", None) => choices(ShmemEnabled::ALL, t.shmem_enabled),
            ("use_zero_page", None) => (t.use_zero_page as u8).to_string(),
            ("hpage_pmd_size", None) => crate::HPAGE_PMD_SIZE.to_string(),
            ("khugepaged", Some("defrag")) => (t.khugepaged.defrag as u8).to_string(),
            ("khugepaged", Some("full_scans")) => self.khugepaged_state.full_scans.to_string(),
            ("khugepaged", Some("pages_collapsed")) => {
                self.khugepaged_state.pages_collapsed.to_string()
            }
            ("khugepaged", Some(name)) => {
                let mut k = t.khugepaged.clone();
                khugepaged_field(&mut k, name)
                    .ok_or(Errno::ENOENT)?
                    .to_string()
            }
            (dir, Some(file)) => {
                let order = size_dir_order(dir).ok_or(Errno::ENOENT)? as usize;
                match file {
                    "enabled" if order >= 2 && self.profile.anon_mthp => {
                        choices(ThpOrderEnabled::ALL, t.anon_orders[order])
                    }
                    "shmem_enabled" if self.profile.shmem_mthp => {
                        choices(ShmemOrderEnabled::ALL, t.shmem_orders[order])
                    }
                    _ => return Err(Errno::ENOENT),
                }
            }
            _ => return Err(Errno::ENOENT),
        })
    }

    /// Writes a THP sysfs file with the kernel's validation: EINVAL for a value the file does
    /// not accept (the write changes nothing then), ENOENT for unknown files, EPERM for the
    /// read-only counters.
    pub fn sysfs_write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        let value = value.trim();
        let mut parts = path.trim_matches('/').splitn(2, '/');
        let (first, rest) = (parts.next().unwrap_or(""), parts.next());
        let flag = |v: &str| match v {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(Errno::EINVAL),
        };
        let (anon_mthp, shmem_mthp) = (self.profile.anon_mthp, self.profile.shmem_mthp);
        let t = &mut self.thp;
        match (first, rest) {
            ("enabled", None) => t.enabled = value.parse().map_err(|_| Errno::EINVAL)?,
            ("defrag", None) => t.defrag = value.parse().map_err(|_| Errno::EINVAL)?,
            ("shmem_enabled", None) => {
                t.shmem_enabled = value.parse().map_err(|_| Errno::EINVAL)?
            }
            ("use_zero_page", None) => t.use_zero_page = flag(value)?,
            ("khugepaged", Some("defrag")) => t.khugepaged.defrag = flag(value)?,
            ("khugepaged", Some("full_scans" | "pages_collapsed")) => return Err(Errno::EPERM),
            ("khugepaged", Some(name)) => {
                let n: u32 = value.parse().map_err(|_| Errno::EINVAL)?;
                let max = match name {
                    "max_ptes_none" | "max_ptes_swap" | "max_ptes_shared" => {
                        crate::HPAGE_PMD_NR as u32 - 1
                    }
                    _ => u32::MAX,
                };
                if n > max || (name == "pages_to_scan" && n == 0) {
                    return Err(Errno::EINVAL);
                }
                *khugepaged_field(&mut t.khugepaged, name).ok_or(Errno::ENOENT)? = n;
            }
            (dir, Some(file)) => {
                let order = size_dir_order(dir).ok_or(Errno::ENOENT)? as usize;
                // Before 6.8 (anon) and 6.11 (shmem) the per-size directories do not exist;
                // the per-order arrays keep their boot values (PMD inherit, others never),
                // which is what those kernels do.
                match file {
                    "enabled" if order >= 2 && anon_mthp => {
                        t.anon_orders[order] = value.parse().map_err(|_| Errno::EINVAL)?
                    }
                    "shmem_enabled" if shmem_mthp => {
                        t.shmem_orders[order] = value.parse().map_err(|_| Errno::EINVAL)?
                    }
                    _ => return Err(Errno::ENOENT),
                }
            }
            _ => return Err(Errno::ENOENT),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_round_trip_and_validation() {
        let mut k = Kernel::default();
        assert_eq!(k.sysfs_read("enabled").unwrap(), "always [madvise] never");
        k.sysfs_write("enabled", "always").unwrap();
        assert_eq!(k.thp.enabled, ThpEnabled::Always);
        assert_eq!(k.sysfs_write("enabled", "sometimes"), Err(Errno::EINVAL));
        k.sysfs_write("khugepaged/max_ptes_shared", "0").unwrap();
        assert_eq!(k.thp.khugepaged.max_ptes_shared, 0);
        assert_eq!(
            k.sysfs_write("khugepaged/max_ptes_none", "512"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            k.sysfs_write("khugepaged/pages_to_scan", "0"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            k.sysfs_write("khugepaged/full_scans", "3"),
            Err(Errno::EPERM)
        );
        k.sysfs_write("hugepages-64kB/enabled", "always").unwrap();
        assert_eq!(k.thp.anon_orders[4], ThpOrderEnabled::Always);
        assert_eq!(
            k.sysfs_read("hugepages-2048kB/enabled").unwrap(),
            "always [inherit] madvise never"
        );
        assert_eq!(
            k.sysfs_read("hugepages-8kB/shmem_enabled").unwrap(),
            "always inherit within_size advise [never]"
        );
        assert_eq!(k.sysfs_read("hugepages-8kB/enabled"), Err(Errno::ENOENT));
        assert_eq!(k.sysfs_read("nope"), Err(Errno::ENOENT));
        // Before 6.8 there are no per-size directories at all; 6.8 .. 6.10 have no shmem ones.
        let mut k = Kernel::new(crate::KernelProfile::v6_1());
        assert_eq!(k.sysfs_read("hugepages-2048kB/enabled"), Err(Errno::ENOENT));
        assert_eq!(
            k.sysfs_write("hugepages-16kB/enabled", "always"),
            Err(Errno::ENOENT)
        );
        assert_eq!(k.thp.anon_orders[2], ThpOrderEnabled::Never);
        let k = Kernel::new(crate::KernelProfile::for_release("6.10").unwrap());
        assert!(k.sysfs_read("hugepages-16kB/enabled").is_ok());
        assert_eq!(
            k.sysfs_read("hugepages-16kB/shmem_enabled"),
            Err(Errno::ENOENT)
        );
        assert_eq!(k.sysfs_read("khugepaged/pages_to_scan").unwrap(), "4096");
    }
}
