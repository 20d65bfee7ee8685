//! The selftests' thp_settings.c: a snapshot of every THP and khugepaged setting, written to
//! the backend in the same order, with a push/pop stack of depth 4.

use crate::backend::{Backend, Errno};

/// The anonymous / shmem orders with a `hugepages-<N>kB` directory on x86_64 (8 KiB .. 2 MiB;
/// order 1 exists for shmem only).
const ORDERS: std::ops::RangeInclusive<u8> = 1..=9;

/// `struct thp_settings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThpSettings {
    pub thp_enabled: String,
    pub thp_defrag: String,
    pub shmem_enabled: String,
    pub use_zero_page: u64,
    pub khugepaged_defrag: u64,
    pub alloc_sleep_millisecs: u64,
    pub scan_sleep_millisecs: u64,
    pub max_ptes_none: u64,
    pub max_ptes_swap: u64,
    pub max_ptes_shared: u64,
    pub pages_to_scan: u64,
    /// `hugepages-<N>kB/enabled` by order; None where the directory does not exist.
    pub hugepages: [Option<String>; 10],
    /// `hugepages-<N>kB/shmem_enabled` by order.
    pub shmem_hugepages: [Option<String>; 10],
    /// The test file's block queue read_ahead_kb (thp_settings.c's `read_ahead_kb`, read and
    /// written only when `dev_queue_read_ahead_path` is set: file tests on a disk).
    pub read_ahead: Option<ReadAhead>,
}

/// `dev_queue_read_ahead_path` and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    pub path: String,
    pub kb: u64,
}

/// `hugepages-<N>kB/enabled` and `.../shmem_enabled` by order (built once).
fn size_files(order: u8) -> &'static (String, String) {
    static FILES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    &FILES.get_or_init(|| {
        (0..=model::HPAGE_PMD_ORDER)
            .map(|o| {
                let dir = format!("hugepages-{}kB", (model::PAGE_SIZE << o) / 1024);
                (format!("{dir}/enabled"), format!("{dir}/shmem_enabled"))
            })
            .collect()
    })[order as usize]
}

/// The selected value of a sysfs choice file ("always [madvise] never" -> "madvise").
pub fn selected(v: &str) -> String {
    match (v.find('['), v.find(']')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.trim().to_string(),
    }
}

fn num(b: &mut dyn Backend, path: &str) -> Result<u64, Errno> {
    b.thp_read(path)?.trim().parse().map_err(|_| Errno::EINVAL)
}

impl ThpSettings {
    /// `thp_read_settings`.
    pub fn read(b: &mut dyn Backend) -> Result<ThpSettings, Errno> {
        let mut hugepages: [Option<String>; 10] = Default::default();
        let mut shmem_hugepages: [Option<String>; 10] = Default::default();
        for o in ORDERS {
            hugepages[o as usize] = b.thp_read(&size_files(o).0).ok().map(|v| selected(&v));
            shmem_hugepages[o as usize] = b.thp_read(&size_files(o).1).ok().map(|v| selected(&v));
        }
        Ok(ThpSettings {
            thp_enabled: selected(&b.thp_read("enabled")?),
            thp_defrag: selected(&b.thp_read("defrag")?),
            shmem_enabled: selected(&b.thp_read("shmem_enabled")?),
            use_zero_page: num(b, "use_zero_page")?,
            khugepaged_defrag: num(b, "khugepaged/defrag")?,
            alloc_sleep_millisecs: num(b, "khugepaged/alloc_sleep_millisecs")?,
            scan_sleep_millisecs: num(b, "khugepaged/scan_sleep_millisecs")?,
            max_ptes_none: num(b, "khugepaged/max_ptes_none")?,
            max_ptes_swap: num(b, "khugepaged/max_ptes_swap")?,
            max_ptes_shared: num(b, "khugepaged/max_ptes_shared")?,
            pages_to_scan: num(b, "khugepaged/pages_to_scan")?,
            hugepages,
            shmem_hugepages,
            read_ahead: None,
        })
    }

    /// `thp_read_settings` with `dev_queue_read_ahead_path` set to `path`.
    pub fn read_with_read_ahead(
        b: &mut dyn Backend,
        path: Option<&str>,
    ) -> Result<ThpSettings, Errno> {
        let mut s = ThpSettings::read(b)?;
        if let Some(path) = path {
            s.read_ahead = Some(ReadAhead {
                path: path.to_string(),
                kb: b.read_ahead_kb(path)?,
            });
        }
        Ok(s)
    }

    /// `thp_write_settings`: every file, in thp_settings.c's order.
    pub fn write(&self, b: &mut dyn Backend) -> Result<(), String> {
        // Every failure names the file and the value, so a broken restore is never silent.
        fn put(b: &mut dyn Backend, path: &str, value: &str) -> Result<(), String> {
            b.thp_write(path, value).map_err(|e| {
                format!("writing {value:?} to /sys/kernel/mm/transparent_hugepage/{path}: {e}")
            })
        }
        put(b, "enabled", &self.thp_enabled)?;
        put(b, "defrag", &self.thp_defrag)?;
        put(b, "shmem_enabled", &self.shmem_enabled)?;
        put(b, "use_zero_page", &self.use_zero_page.to_string())?;
        put(b, "khugepaged/defrag", &self.khugepaged_defrag.to_string())?;
        put(
            b,
            "khugepaged/alloc_sleep_millisecs",
            &self.alloc_sleep_millisecs.to_string(),
        )?;
        put(
            b,
            "khugepaged/scan_sleep_millisecs",
            &self.scan_sleep_millisecs.to_string(),
        )?;
        put(
            b,
            "khugepaged/max_ptes_none",
            &self.max_ptes_none.to_string(),
        )?;
        put(
            b,
            "khugepaged/max_ptes_swap",
            &self.max_ptes_swap.to_string(),
        )?;
        put(
            b,
            "khugepaged/max_ptes_shared",
            &self.max_ptes_shared.to_string(),
        )?;
        put(
            b,
            "khugepaged/pages_to_scan",
            &self.pages_to_scan.to_string(),
        )?;
        if let Some(ra) = &self.read_ahead {
            b.set_read_ahead_kb(&ra.path, ra.kb)
                .map_err(|e| format!("writing {} to {}: {e}", ra.kb, ra.path))?;
        }
        for o in ORDERS {
            if let Some(v) = &self.hugepages[o as usize] {
                put(b, &size_files(o).0, v)?;
            }
        }
        for o in ORDERS {
            if let Some(v) = &self.shmem_hugepages[o as usize] {
                put(b, &size_files(o).1, v)?;
            }
        }
        Ok(())
    }

    /// The settings khugepaged.c's main() pushes, for `anon_order` (`-s`, default 0).
    pub fn selftest_defaults(current: &ThpSettings, anon_order: u8) -> ThpSettings {
        let nr = model::HPAGE_PMD_NR as u64;
        let pmd = model::HPAGE_PMD_ORDER as usize;
        let mut s = ThpSettings {
            thp_enabled: "madvise".into(),
            thp_defrag: "always".into(),
            shmem_enabled: "advise".into(),
            use_zero_page: 0,
            khugepaged_defrag: 1,
            alloc_sleep_millisecs: 10,
            scan_sleep_millisecs: 10,
            max_ptes_none: nr - 1,
            max_ptes_swap: nr / 8,
            max_ptes_shared: nr / 2,
            pages_to_scan: nr * 8,
            hugepages: Default::default(),
            shmem_hugepages: Default::default(),
            // main()'s default_settings: .read_ahead_kb = 0.
            read_ahead: current.read_ahead.as_ref().map(|ra| ReadAhead {
                path: ra.path.clone(),
                kb: 0,
            }),
        };
        // Zero-initialised per-size entries are "never"; only existing directories are written.
        for o in ORDERS {
            let o = o as usize;
            s.hugepages[o] = current.hugepages[o].as_ref().map(|_| "never".to_string());
            s.shmem_hugepages[o] = current.shmem_hugepages[o]
                .as_ref()
                .map(|_| "never".to_string());
        }
        let set = |slot: &mut Option<String>, v: &str| {
            if slot.is_some() {
                *slot = Some(v.to_string());
            }
        };
        set(&mut s.hugepages[pmd], "inherit");
        set(&mut s.shmem_hugepages[pmd], "inherit");
        if (anon_order as usize) < s.hugepages.len() {
            set(&mut s.hugepages[anon_order as usize], "always");
            set(&mut s.shmem_hugepages[anon_order as usize], "always");
        }
        s
    }
}

/// `thp_push_settings` / `thp_pop_settings` / `thp_current_settings`.
#[derive(Clone, Debug, Default)]
pub struct SettingsStack {
    stack: Vec<ThpSettings>,
}

/// thp_settings.c's MAX_SETTINGS_DEPTH.
const MAX_SETTINGS_DEPTH: usize = 4;

impl SettingsStack {
    pub fn push(&mut self, b: &mut dyn Backend, s: ThpSettings) -> Result<(), String> {
        if self.stack.len() >= MAX_SETTINGS_DEPTH {
            return Err("Fail: Settings stack exceeded".into());
        }
        s.write(b)?;
        self.stack.push(s);
        Ok(())
    }

    pub fn pop(&mut self, b: &mut dyn Backend) -> Result<(), String> {
        if self.stack.pop().is_none() {
            return Err("Fail: Settings stack empty".into());
        }
        if let Some(top) = self.stack.last() {
            top.write(b)?;
        }
        Ok(())
    }

    pub fn current(&self) -> Result<&ThpSettings, String> {
        self.stack
            .last()
            .ok_or_else(|| "Fail: No settings set".to_string())
    }

    pub fn depth(&self) -> usize {
        self.stack.len()
    }
}
