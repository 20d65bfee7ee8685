//! What /proc shows about an address space (fs/proc/task_mmu.c `smaps_account`,
//! `smaps_pte_entry`, `smaps_pmd_entry`, `pte_to_pagemap_entry`; fs/proc/page.c): the same
//! numbers a test reads on a real host, computed from the model's page tables.

use crate::errno::Errno;
use crate::folio::FolioId;
use crate::huge_memory::TvaType;
use crate::kernel::{Kernel, Pid};
use crate::page_table::{Mapping, Pte};
use crate::profile::PagemapPmdExclusive;
use crate::{HPAGE_PMD_SIZE, PAGE_SIZE};

/// The /proc/PID/smaps block of one VMA, in kB like the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Smaps {
    pub start: u64,
    pub end: u64,
    pub rss: u64,
    pub anonymous: u64,
    pub anon_huge_pages: u64,
    pub shmem_pmd_mapped: u64,
    pub file_pmd_mapped: u64,
    pub swap: u64,
    pub thp_eligible: bool,
}

/// One /proc/PID/pagemap entry, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagemapEntry {
    pub present: bool,
    pub swap: bool,
    /// PM_MMAP_EXCLUSIVE.
    pub exclusive: bool,
    /// The mapped folio and page.
    pub page: Option<(FolioId, usize)>,
    /// The page frame number of the mapped page (bits 0-54 as root reads them); never reused
    /// while the model runs (see [`crate::Folio::pfn`]).
    pub pfn: Option<u64>,
    /// Mapped through a PMD.
    pub pmd_mapped: bool,
    /// The shared zero page (or huge zero page).
    pub zero_page: bool,
}

impl Kernel {
    /// The smaps block of the VMA starting exactly at `start` (the selftests match the line
    /// that begins with the test address). ENOENT when no VMA starts there.
    pub fn smaps(&self, pid: Pid, start: u64) -> Result<Smaps, Errno> {
        match self.smaps_at(pid, start) {
            Ok(s) if s.start == start => Ok(s),
            Ok(_) => Err(Errno::ENOENT),
            Err(e) => Err(e),
        }
    }

    /// The smaps block of the VMA containing `addr` (any address in it, as a reader of
    /// /proc/PID/smaps finds the block whose range holds the address). ENOENT when nothing is
    /// mapped there.
    pub fn smaps_at(&self, pid: Pid, addr: u64) -> Result<Smaps, Errno> {
        let mm = self.mm(pid)?;
        let vma = mm.vmas.find(addr).ok_or(Errno::ENOENT)?;
        let mut s = Smaps {
            start: vma.start,
            end: vma.end,
            thp_eligible: self.thp_vma_allowable_orders(pid, vma, TvaType::Smaps, u32::MAX) != 0,
            ..Smaps::default()
        };
        let kb = PAGE_SIZE / 1024;
        for (pmd_start, _) in mm.page_table.pmds_in(vma.start, vma.end) {
            let lo = vma.start.max(pmd_start);
            let hi = vma.end.min(pmd_start + HPAGE_PMD_SIZE);
            if let Mapping::PmdMapped { pmd, .. } = mm.page_table.lookup(pmd_start) {
                let folio = self.folio(pmd.folio);
                let size = HPAGE_PMD_SIZE / 1024;
                s.rss += size;
                if folio.is_anon() {
                    s.anon_huge_pages += size;
                    s.anonymous += size;
                } else if folio.swapbacked {
                    s.shmem_pmd_mapped += size;
                } else {
                    s.file_pmd_mapped += size;
                }
                continue;
            }
            let mut a = lo;
            while a < hi {
                match mm.page_table.lookup(a) {
                    Mapping::Pte(Pte::Present(p)) => {
                        s.rss += kb;
                        if self.folio(p.folio).is_anon() {
                            s.anonymous += kb;
                        }
                    }
                    Mapping::Pte(Pte::Swap { .. }) => s.swap += kb,
                    _ => {}
                }
                a += PAGE_SIZE;
            }
        }
        Ok(s)
    }

    /// The /proc/PID/pagemap entry of `addr`, as root reads it.
    pub fn pagemap(&self, pid: Pid, addr: u64) -> Result<PagemapEntry, Errno> {
        let mm = self.mm(pid)?;
        Ok(match mm.page_table.lookup(addr) {
            Mapping::None | Mapping::Pte(Pte::None) => PagemapEntry::default(),
            Mapping::HugeZero | Mapping::Pte(Pte::Zero { .. }) => PagemapEntry {
                present: true,
                zero_page: true,
                pmd_mapped: matches!(mm.page_table.lookup(addr), Mapping::HugeZero),
                ..PagemapEntry::default()
            },
            Mapping::Pte(Pte::Swap { .. }) => PagemapEntry {
                swap: true,
                ..PagemapEntry::default()
            },
            Mapping::Pte(Pte::Present(p)) => {
                let folio = self.folio(p.folio);
                PagemapEntry {
                    present: true,
                    exclusive: folio.folio_precise_page_mapcount(p.page as usize) == 1,
                    page: Some((p.folio, p.page as usize)),
                    pfn: Some(folio.pfn + p.page as u64),
                    ..PagemapEntry::default()
                }
            }
            Mapping::PmdMapped { pmd, page } => {
                let folio = self.folio(pmd.folio);
                let tested = match self.profile.pagemap_pmd_exclusive {
                    PagemapPmdExclusive::HeadPage => 0,
                    PagemapPmdExclusive::PerSubpage => page,
                };
                PagemapEntry {
                    present: true,
                    exclusive: folio.folio_precise_page_mapcount(tested) == 1,
                    page: Some((pmd.folio, page)),
                    pfn: Some(folio.pfn + page as u64),
                    pmd_mapped: true,
                    ..PagemapEntry::default()
                }
            }
        })
    }

    /// /proc/kpagecount of a folio page: its precise mapcount.
    pub fn kpagecount(&self, folio: FolioId, page: usize) -> i32 {
        self.folio(folio).folio_precise_page_mapcount(page)
    }

    /// The folio page mapped at `addr`, if any (a `follow_page` without side effects).
    pub fn folio_at(&self, pid: Pid, addr: u64) -> Option<(FolioId, usize)> {
        match self.mm(pid).ok()?.page_table.lookup(addr) {
            Mapping::PmdMapped { pmd, page } => Some((pmd.folio, page)),
            Mapping::Pte(Pte::Present(p)) => Some((p.folio, p.page as usize)),
            _ => None,
        }
    }
}
