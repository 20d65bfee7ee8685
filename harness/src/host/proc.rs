//! Host observations through typed /proc readers (the procfs crate): the smaps block of a
//! VMA, and per page pagemap + kpageflags + kpagecount, turned into [`PageObs`].

use std::collections::BTreeMap;

use procfs::process::{PageInfo, Pfn, Process};
use procfs::{KPageCount, KPageFlags, PhysicalPageFlags};

use crate::backend::{PageObs, PageState, SmapsFields};

/// The smaps fields of the VMA that starts exactly at `addr`.
pub fn smaps_at(addr: u64) -> Option<SmapsFields> {
    let maps = Process::myself().ok()?.smaps().ok()?;
    let m = maps.into_iter().find(|m| m.address.0 == addr)?;
    let kb = |k: &str| m.extension.map.get(k).copied().unwrap_or(0) / 1024;
    Some(SmapsFields {
        rss: kb("Rss"),
        anon_huge_pages: kb("AnonHugePages"),
        shmem_pmd_mapped: kb("ShmemPmdMapped"),
        file_pmd_mapped: kb("FilePmdMapped"),
        swap: kb("Swap"),
    })
}

/// Flags of the aligned 512-page block around a PFN (a folio of order ≤ 9 lies inside one),
/// cached per block.
struct FlagBlocks {
    reader: Option<KPageFlags>,
    blocks: BTreeMap<u64, Vec<PhysicalPageFlags>>,
}

impl FlagBlocks {
    fn flags(&mut self, pfn: u64) -> Option<PhysicalPageFlags> {
        let base = pfn & !(model::HPAGE_PMD_NR as u64 - 1);
        if !self.blocks.contains_key(&base) {
            let r = self.reader.as_mut()?;
            let v = r
                .get_range_info(Pfn(base), Pfn(base + model::HPAGE_PMD_NR as u64))
                .ok()?;
            self.blocks.insert(base, v);
        }
        self.blocks
            .get(&base)
            .and_then(|v| v.get((pfn - base) as usize))
            .copied()
    }

    /// Head PFN and order of the folio holding `pfn`.
    fn folio_of(&mut self, pfn: u64) -> (u64, u8) {
        let Some(f) = self.flags(pfn) else {
            return (pfn, 0);
        };
        if !f.intersects(PhysicalPageFlags::COMPOUND_HEAD | PhysicalPageFlags::COMPOUND_TAIL) {
            return (pfn, 0);
        }
        let base = pfn & !(model::HPAGE_PMD_NR as u64 - 1);
        let mut head = pfn;
        while head > base
            && !self
                .flags(head)
                .is_some_and(|f| f.contains(PhysicalPageFlags::COMPOUND_HEAD))
        {
            head -= 1;
        }
        let mut nr = 1u64;
        while head + nr < base + model::HPAGE_PMD_NR as u64
            && self
                .flags(head + nr)
                .is_some_and(|f| f.contains(PhysicalPageFlags::COMPOUND_TAIL))
        {
            nr += 1;
        }
        (head, nr.next_power_of_two().trailing_zeros() as u8)
    }
}

/// The page map of `nr` pages from `addr` in this process. Needs root for PFNs. The pagemap
/// is read again after kpageflags and kpagecount; if a page changed meanwhile (khugepaged
/// runs concurrently), the whole picture is taken again, so it is never torn.
pub fn page_map(addr: u64, nr: usize) -> Vec<PageObs> {
    let mut last = Vec::new();
    for _ in 0..8 {
        let Some(before) = pagemap_raw(addr, nr) else {
            return vec![PageObs::default(); nr];
        };
        last = page_map_once(addr, nr);
        if pagemap_raw(addr, nr).as_ref() == Some(&before) {
            return last;
        }
    }
    last
}

/// The raw pagemap words of the range (for the stability check).
fn pagemap_raw(addr: u64, nr: usize) -> Option<Vec<u64>> {
    let first = (addr / model::PAGE_SIZE) as usize;
    let infos = Process::myself()
        .ok()?
        .pagemap()
        .ok()?
        .get_range_info(first..first + nr)
        .ok()?;
    Some(
        infos
            .iter()
            .map(|i| match i {
                PageInfo::MemoryPage(m) => m.bits(),
                PageInfo::SwapPage(s) => s.bits(),
            })
            .collect(),
    )
}

fn page_map_once(addr: u64, nr: usize) -> Vec<PageObs> {
    let ps = model::PAGE_SIZE;
    let Ok(me) = Process::myself() else {
        return vec![PageObs::default(); nr];
    };
    let Ok(mut pm) = me.pagemap() else {
        return vec![PageObs::default(); nr];
    };
    let first = (addr / ps) as usize;
    let Ok(infos) = pm.get_range_info(first..first + nr) else {
        return vec![PageObs::default(); nr];
    };
    let mut flags = FlagBlocks {
        reader: KPageFlags::new().ok(),
        blocks: BTreeMap::new(),
    };
    let mut counts = KPageCount::new().ok();
    let mut out = Vec::with_capacity(nr);
    for info in &infos {
        let mut o = PageObs::default();
        match info {
            PageInfo::MemoryPage(m) if !m.contains(procfs::process::MemoryPageFlags::PRESENT) => {}
            PageInfo::MemoryPage(m) => {
                let pfn: u64 = m.get_page_frame_number().0;
                o.state = PageState::Present;
                o.exclusive = m.contains(procfs::process::MemoryPageFlags::MMAP_EXCLUSIVE);
                let f = flags.flags(pfn);
                if f.is_some_and(|f| f.contains(PhysicalPageFlags::ZERO_PAGE)) {
                    o.state = PageState::Zero;
                } else if pfn != 0 {
                    let (head, order) = flags.folio_of(pfn);
                    o.folio = Some(head);
                    o.order = order;
                    o.index_in_folio = (pfn - head) as u32;
                    o.anon = f.is_some_and(|f| f.contains(PhysicalPageFlags::ANON));
                    o.mapcount = counts
                        .as_mut()
                        .and_then(|c| c.get_count_in_range(Pfn(pfn), Pfn(pfn + 1)).ok())
                        .and_then(|v| v.first().copied())
                        .unwrap_or(0) as i32;
                }
            }
            PageInfo::SwapPage(_) => o.state = PageState::Swap,
        }
        out.push(o);
    }
    if !mark_pmd_mapped_scan(addr, &mut out) {
        mark_pmd_mapped(addr, &mut out);
    }
    out
}

/// `struct pm_scan_arg` of the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (include/uapi/linux/fs.h,
/// Linux 6.7+).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`: a run of pages with the same categories.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// PAGE_IS_HUGE: the page is mapped by a huge (PMD) entry (`pagemap_thp_category`).
const PAGE_IS_HUGE: u64 = 1 << 6;

/// `_IOWR('f', 16, struct pm_scan_arg)` in the asm-generic ioctl encoding (x86, arm64, riscv).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;

/// Marks PMD-mapped pages exactly: PAGEMAP_SCAN reports the pages a huge PMD maps as
/// PAGE_IS_HUGE (the kernel reads the page table itself). False when the kernel has no
/// PAGEMAP_SCAN (before 6.7), so the caller falls back to the smaps-based estimate.
fn mark_pmd_mapped_scan(addr: u64, pages: &mut [PageObs]) -> bool {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    {
        use std::os::fd::AsRawFd;
        let ps = model::PAGE_SIZE;
        let end = addr + pages.len() as u64 * ps;
        let Ok(f) = std::fs::File::open("/proc/self/pagemap") else {
            return false;
        };
        let mut regions = vec![PageRegion::default(); 64];
        let mut huge = Vec::new();
        let mut start = addr;
        while start < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_anyof_mask: PAGE_IS_HUGE,
                return_mask: PAGE_IS_HUGE,
                ..PmScanArg::default()
            };
            // SAFETY: `arg` and `regions` outlive the call; the kernel writes at most
            // `vec_len` regions into `regions` and `walk_end` into `arg`.
            let n = unsafe {
                libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg)
            };
            if n < 0 {
                return false;
            }
            huge.extend_from_slice(&regions[..n as usize]);
            if arg.walk_end <= start {
                return false;
            }
            start = arg.walk_end;
        }
        for r in huge {
            let first = (r.start.max(addr) - addr) / ps;
            let last = (r.end.min(end) - addr) / ps;
            for p in &mut pages[first as usize..last as usize] {
                p.pmd_mapped = true;
            }
        }
        true
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    {
        let _ = (addr, pages);
        false
    }
}

/// Marks PMD-mapped pages on kernels without PAGEMAP_SCAN. pagemap does not say whether a page
/// is mapped by a PMD, so (like
/// tools/mm/thpmaps) a 2 MiB block qualifies when one PMD-order folio maps it whole, in order,
/// naturally aligned; the blocks of a VMA are marked only when their number matches the VMA's
/// AnonHugePages/ShmemPmdMapped/FilePmdMapped exactly, so a PTE-mapped whole THP beside a
/// PMD-mapped one is never mislabelled (both stay unmarked when smaps cannot tell them apart).
fn mark_pmd_mapped(addr: u64, pages: &mut [PageObs]) {
    let ps = model::PAGE_SIZE;
    let nr = model::HPAGE_PMD_NR;
    let end = addr + pages.len() as u64 * ps;
    let Ok(maps) = Process::myself().and_then(|p| p.smaps()) else {
        return;
    };
    for m in maps.into_iter() {
        let (start, vend) = m.address;
        if vend <= addr || start >= end {
            continue;
        }
        let bytes = |k: &str| m.extension.map.get(k).copied().unwrap_or(0);
        let huge_blocks =
            (bytes("AnonHugePages") + bytes("ShmemPmdMapped") + bytes("FilePmdMapped"))
                / model::HPAGE_PMD_SIZE;
        if huge_blocks == 0 {
            continue;
        }
        // Candidate blocks inside both the VMA and the observed range.
        let mut candidates = Vec::new();
        let mut b = (start.max(addr) + model::HPAGE_PMD_SIZE - 1) & !(model::HPAGE_PMD_SIZE - 1);
        while b + model::HPAGE_PMD_SIZE <= vend.min(end) {
            let i = ((b - addr) / ps) as usize;
            let p0 = pages[i];
            let whole = p0.state == PageState::Present
                && p0.order == model::HPAGE_PMD_ORDER
                && p0.index_in_folio == 0
                && (0..nr).all(|k| {
                    pages[i + k].folio == p0.folio && pages[i + k].index_in_folio == k as u32
                });
            if whole {
                candidates.push(i);
            }
            b += model::HPAGE_PMD_SIZE;
        }
        if candidates.len() as u64 == huge_blocks {
            for i in candidates {
                for p in &mut pages[i..i + nr] {
                    p.pmd_mapped = true;
                }
            }
        }
    }
}
