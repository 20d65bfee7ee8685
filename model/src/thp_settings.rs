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
