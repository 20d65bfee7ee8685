//! khugepaged registration (mm/khugepaged.c `khugepaged_enter_vma`, `__khugepaged_enter`,
//! `hugepage_pmd_enabled`; include/linux/khugepaged.h `khugepaged_fork`, `khugepaged_exit`).

use crate::huge_memory::TvaType;
use crate::kernel::{Kernel, Pid};
use crate::thp_settings::{KhugepagedSettings, ThpEnabled, ThpOrderEnabled};
use crate::vma::Vma;
use crate::HPAGE_PMD_ORDER;

impl Kernel {
    /// `hugepage_pmd_enabled` (`hugepage_flags_enabled` before 6.11, `hugepage_enabled` with
    /// mTHP collapse, 7.2): whether the khugepaged thread runs at all, per the era's rule
    /// ([`crate::profile::KhugepagedThread`]).
    pub fn hugepage_pmd_enabled(&self) -> bool {
        use crate::profile::KhugepagedThread as T;
        let global_enabled = self.thp.enabled != ThpEnabled::Never;
        let order_enabled = |o: u8| match self.thp.anon_orders[o as usize] {
            ThpOrderEnabled::Always | ThpOrderEnabled::Madvise => true,
            ThpOrderEnabled::Inherit => global_enabled,
            ThpOrderEnabled::Never => false,
        };
        // A size set to always or madvise itself (inherit is the global setting).
        let any_size_set = crate::thp_settings::ANON_ORDERS.clone().any(|o| {
            matches!(
                self.thp.anon_orders[o as usize],
                ThpOrderEnabled::Always | ThpOrderEnabled::Madvise
            )
        });
        // The config counted with the PMD rule (it is gone from 7.2 on).
        let config = self.read_only_thp_for_fs && !self.profile.file_thp_without_read_only_config;
        let pmd = (config && global_enabled) || order_enabled(HPAGE_PMD_ORDER);
        // 7.2's mTHP collapse series: `hugepage_enabled`.
        if self.profile.khugepaged_mthp_collapse {
            return global_enabled || any_size_set || self.shmem_hpage_pmd_enabled();
        }
        match self.profile.khugepaged_thread {
            T::Global => global_enabled,
            T::GlobalOrAnySize => global_enabled || any_size_set,
            T::PmdSize => pmd,
            T::PmdSizeOrShmem => pmd || self.shmem_hpage_pmd_enabled(),
        }
    }

    /// `collapse_possible_orders`: the orders khugepaged (or MADV_COLLAPSE) may build in this
    /// VMA. With mTHP collapse, khugepaged asks for every anonymous order; otherwise, and
    /// always for MADV_COLLAPSE and file memory, for the PMD order only.
    pub(crate) fn collapse_possible_orders(
        &self,
        pid: Pid,
        vma: &Vma,
        vm_flags: crate::vma::VmFlags,
        tva: TvaType,
    ) -> u32 {
        let orders = if self.profile.khugepaged_mthp_collapse
            && tva == TvaType::Khugepaged
            && vma.is_anonymous()
        {
            crate::thp_settings::ANON_ORDERS.fold(0, |m, o| m | (1 << o))
        } else {
            1 << HPAGE_PMD_ORDER
        };
        self.thp_vma_allowable_orders_with_flags(pid, vma, vm_flags, tva, orders)
    }

    /// `khugepaged_enter_vma`: registers the MM with khugepaged if the VMA could get a PMD THP
    /// from it. The MM joins the tail of the scan list once and stays until it exits.
    pub(crate) fn khugepaged_enter_vma(
        &mut self,
        pid: Pid,
        vma: &Vma,
        vm_flags: crate::vma::VmFlags,
    ) {
        let Some(mm) = self.mms.get(&pid) else { return };
        if mm.khugepaged_registered || !self.hugepage_pmd_enabled() {
            return;
        }
        if self.collapse_possible_orders(pid, vma, vm_flags, TvaType::Khugepaged) == 0 {
            return;
        }
        self.mms.get_mut(&pid).expect("live").khugepaged_registered = true;
        self.khugepaged_mm_list.push(pid);
    }

    /// `khugepaged_fork`: a child of a registered MM is registered too.
    pub(crate) fn khugepaged_fork(&mut self, parent: Pid, child: Pid) {
        if self
            .mms
            .get(&parent)
            .is_some_and(|m| m.khugepaged_registered)
        {
            self.mms
                .get_mut(&child)
                .expect("live")
                .khugepaged_registered = true;
            self.khugepaged_mm_list.push(child);
        }
    }

    /// `__khugepaged_exit`: the MM leaves the scan list at once, unless it is the one the
    /// scan cursor is on (`khugepaged_scan.mm_slot`): that slot stays until the scan reaches
    /// it, finds the MM gone and moves to the next slot (`collect_mm_slot` from
    /// `khugepaged_scan_mm_slot`), so the exit neither ends nor counts a full scan.
    pub(crate) fn khugepaged_exit(&mut self, pid: Pid) {
        if self.khugepaged_state.cursor.map(|(p, _)| p) == Some(pid) {
            return;
        }
        self.khugepaged_mm_list.retain(|&p| p != pid);
    }

    /// The MMs on khugepaged's scan list, in scan order.
    pub fn khugepaged_mm_list(&self) -> &[Pid] {
        &self.khugepaged_mm_list
    }
}

use crate::decision::{FolioSeen, RangePicture};
use crate::errno::Errno;
use crate::filemap::{CacheEntry, InodeId};
use crate::folio::{FolioId, FolioOwner};
use crate::memory::Access;
use crate::page_table::{Pmd, Pte};
use crate::profile::SharingPredicate;
use crate::rmap;
use crate::scan_result::ScanResult;
use crate::vma::VmaBacking;
use crate::{pmd_align_down, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE};

/// Who is collapsing (`struct collapse_control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollapseContext {
    /// The khugepaged thread: the max_ptes_* limits and the young/referenced rules apply.
    Khugepaged,
    /// MADV_COLLAPSE: limits ignored, sysfs `enabled` ignored.
    Madvise,
}

impl CollapseContext {
    pub fn is_khugepaged(self) -> bool {
        self == CollapseContext::Khugepaged
    }
}

/// Which step of the collapse produced a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollapseStage {
    /// `hpage_collapse_scan_pmd`: the PTE scan under the mmap read lock.
    ScanPmd,
    /// `collapse_huge_page` after the scan said go (revalidate, swap-in, isolate, copy).
    CollapseHugePage,
    /// `hpage_collapse_scan_file` and `collapse_file` (page-cache collapse).
    ScanFile,
    /// `collapse_pte_mapped_thp`: mapping an existing page-cache THP by a PMD.
    PteMappedThp,
}

/// A structured record of one collapse decision: the result and the counts that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollapseReport {
    pub context: CollapseContext,
    pub stage: CollapseStage,
    pub pid: Pid,
    /// The 2 MiB-aligned address of the range (an mTHP collapse: the start of its block).
    pub addr: u64,
    /// The folio order the attempt builds (the PMD order except for mTHP collapses).
    pub order: u8,
    pub result: ScanResult,
    /// For a `ScanPmd` that said go: what `hpage_collapse_scan_pmd` returned after its
    /// collapse attempts, the status mm_khugepaged_scan_pmd traces. 7.2's mTHP walk
    /// (`mthp_collapse`) can try many blocks; its answer is not the last block's (a block
    /// already an mTHP, SCAN_PTE_MAPPED_HUGEPAGE, leaves it SCAN_FAIL). None otherwise.
    pub outcome: Option<ScanResult>,
    /// none or zero-page PTEs seen (page-cache holes for file collapse).
    pub none_or_zero: u32,
    /// swap PTEs seen (`unmapped`; shmem swap entries for file collapse).
    pub swap: u32,
    /// PTEs the profile's sharing predicate called shared.
    pub shared: u32,
    /// PTEs counted as referenced (khugepaged only).
    pub referenced: u32,
    /// writable PTEs seen.
    pub writable: u32,
    /// pages present in the page cache (file collapse).
    pub present: u32,
    /// The profile's sharing predicate (what `shared` counts).
    pub predicate: SharingPredicate,
    /// The folios the sharing predicate was asked about, in PTE order, with its answers
    /// (anonymous scans only; empty when the scan stopped before the first present PTE).
    pub folios: Vec<FolioSeen>,
    /// The range in `pid` before this stage (for `CollapseHugePage` the state its scan saw:
    /// nothing runs between the two in the model).
    pub before: RangePicture,
    /// The range in `pid` after this stage. Both pictures and `folios` are empty while
    /// [`Kernel::decision_detail`] is off.
    pub after: RangePicture,
}

/// khugepaged's state: the scan cursor and the counters sysfs shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KhugepagedState {
    /// The MM being scanned (`khugepaged_scan.mm_slot`) and the next address in it.
    pub cursor: Option<(Pid, u64)>,
    /// `full_scans`.
    pub full_scans: u64,
    /// `pages_collapsed`.
    pub pages_collapsed: u64,
    /// Wake-ups performed (each one is a `khugepaged_do_scan` after a sleep).
    pub wakeups: u64,
}

/// Collapse-related /proc/vmstat events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollapseStats {
    pub thp_collapse_alloc: u64,
    pub thp_scan_exceed_none_pte: u64,
    pub thp_scan_exceed_swap_pte: u64,
    pub thp_scan_exceed_share_pte: u64,
}

/// Per-PTE tallies of a scan.
#[derive(Default)]
struct Tally {
    none_or_zero: u32,
    swap: u32,
    shared: u32,
    referenced: u32,
    writable: u32,
    present: u32,
    /// The PTEs of the range that map a page (`cc->mthp_present_ptes`), for mTHP collapse.
    occupied: Vec<bool>,
    /// The order of the attempt, for its report (0: the PMD order).
    order: u8,
    /// PTEs the scan looked at, the one that ended it included.
    scanned_ptes: u32,
    folios: Vec<FolioSeen>,
    /// The range before the attempt (None: the report takes the picture after it).
    before: Option<RangePicture>,
}

/// What one `hpage_collapse_scan_pmd` did, for khugepaged's slot walk.
struct PmdScan {
    /// The scan's result, or the collapse's when the scan said go.
    result: ScanResult,
    /// PTEs the scan looked at (0 without a PTE table): the range's cost of khugepaged's
    /// budget from 7.2.
    scanned_ptes: u32,
    /// The scan said go, so the mmap lock was dropped for the collapse.
    said_go: bool,
}

/// The per-PTE rules both passes over an anonymous range apply (`hpage_collapse_scan_pmd`, then
/// `__collapse_huge_page_isolate` with the PMD detached), one rule per helper so the two passes
/// cannot drift. Each `count_*` returns the result that ends the pass, if any; the max_ptes_*
/// limits bind khugepaged only (MADV_COLLAPSE ignores them).
impl Tally {
    /// A none or zero-page PTE, against max_ptes_none.
    fn count_none_or_zero(
        &mut self,
        khugepaged: bool,
        limits: &KhugepagedSettings,
    ) -> Option<ScanResult> {
        self.none_or_zero += 1;
        (khugepaged && self.none_or_zero > limits.max_ptes_none)
            .then_some(ScanResult::ExceedNonePte)
    }

    /// A swap PTE, against max_ptes_swap (the scan pass only: isolate runs after swap-in).
    fn count_swap(&mut self, khugepaged: bool, limits: &KhugepagedSettings) -> Option<ScanResult> {
        self.swap += 1;
        (khugepaged && self.swap > limits.max_ptes_swap).then_some(ScanResult::ExceedSwapPte)
    }

    /// A PTE whose folio the profile's sharing predicate calls shared, against max_ptes_shared.
    fn count_shared(
        &mut self,
        khugepaged: bool,
        limits: &KhugepagedSettings,
    ) -> Option<ScanResult> {
        self.shared += 1;
        (khugepaged && self.shared > limits.max_ptes_shared).then_some(ScanResult::ExceedSharedPte)
    }

    /// A present PTE's young bit or its folio's referenced flag (khugepaged counts them).
    fn count_referenced(&mut self, khugepaged: bool, young: bool, folio_referenced: bool) {
        if khugepaged && (young || folio_referenced) {
            self.referenced += 1;
        }
    }
}

impl Kernel {
    fn report(
        &mut self,
        context: CollapseContext,
        stage: CollapseStage,
        pid: Pid,
        addr: u64,
        result: ScanResult,
        t: &Tally,
    ) {
        // count_collapse_event: the vmstat events count PMD-order attempts only (mTHP
        // attempts have per-size stats, not modelled).
        let order = if t.order == 0 {
            HPAGE_PMD_ORDER
        } else {
            t.order
        };
        match result {
            _ if order != HPAGE_PMD_ORDER => {}
            ScanResult::ExceedNonePte => self.collapse_stats.thp_scan_exceed_none_pte += 1,
            ScanResult::ExceedSwapPte => self.collapse_stats.thp_scan_exceed_swap_pte += 1,
            ScanResult::ExceedSharedPte => self.collapse_stats.thp_scan_exceed_share_pte += 1,
            _ => {}
        }
        let after = match (stage, &t.before) {
            _ if !self.decision_detail => RangePicture::default(),
            // The scan only looks.
            (CollapseStage::ScanPmd, Some(before)) => before.clone(),
            // The PMD range of the attempt (an mTHP block lies inside it).
            _ => self.range_picture(pid, pmd_align_down(addr)),
        };
        self.collapse_log.push(CollapseReport {
            context,
            stage,
            pid,
            addr,
            order,
            result,
            outcome: None,
            none_or_zero: t.none_or_zero,
            swap: t.swap,
            shared: t.shared,
            referenced: t.referenced,
            writable: t.writable,
            present: t.present,
            predicate: self.profile.khugepaged_sharing,
            folios: t.folios.clone(),
            before: t.before.clone().unwrap_or_else(|| after.clone()),
            after,
        });
    }

    /// A fresh tally holding the picture of the range before the attempt.
    fn tally_before(&self, pid: Pid, haddr: u64) -> Tally {
        Tally {
            before: self.decision_detail.then(|| self.range_picture(pid, haddr)),
            ..Tally::default()
        }
    }

    /// The collapse reports recorded so far (oldest first).
    pub fn collapse_log(&self) -> &[CollapseReport] {
        &self.collapse_log
    }

    /// Takes the recorded collapse reports, leaving the log empty.
    pub fn take_collapse_log(&mut self) -> Vec<CollapseReport> {
        std::mem::take(&mut self.collapse_log)
    }

    /// khugepaged's sharing test for a PTE mapping page `page` of `folio`, per profile.
    pub fn khugepaged_sees_shared(&self, folio: FolioId, page: usize) -> bool {
        let f = self.folio(folio);
        match self.profile.khugepaged_sharing {
            SharingPredicate::PageMapcount => f.page_mapcount_shared(page),
            SharingPredicate::FolioLikelyMappedShared => f.folio_likely_mapped_shared(),
            SharingPredicate::FolioMaybeMappedShared => {
                f.folio_maybe_mapped_shared(self.profile.mm_id)
            }
        }
    }

    /// The end of either pass over an anonymous range: SCAN_PAGE_RO where the profile still
    /// needs a writable PTE, then khugepaged's referenced rule. `swap_needs_half_referenced`
    /// is the scan pass's extra rule: swapping in is worth it only if half the range is young.
    fn anon_pass_verdict(
        &self,
        t: &Tally,
        khugepaged: bool,
        swap_needs_half_referenced: bool,
    ) -> ScanResult {
        if self.profile.collapse_requires_writable_pte && t.writable == 0 {
            return ScanResult::PageRo;
        }
        if khugepaged
            && (t.referenced == 0
                || (swap_needs_half_referenced
                    && t.swap > 0
                    && t.referenced < HPAGE_PMD_NR as u32 / 2))
        {
            return ScanResult::LackReferencedPage;
        }
        ScanResult::Succeed
    }

    /// `find_pmd_or_thp_or_none`. The model has no PUD level of its own: a PUD table exists
    /// once anything in that 1 GiB range has had a page table. From 6.19 both cases are
    /// SCAN_NO_PTE_TABLE ([`crate::profile::Switch::ScanNoPteTable`]).
    fn find_pmd_or_thp_or_none(&self, pid: Pid, haddr: u64) -> ScanResult {
        let pt = &self.mms[&pid].page_table;
        match pt.pmd(haddr) {
            Pmd::Huge(_) | Pmd::HugeZero => ScanResult::PmdMapped,
            Pmd::Table(_) => ScanResult::Succeed,
            Pmd::None if self.profile.scan_no_pte_table => ScanResult::NoPteTable,
            Pmd::None => {
                if pt.pud_present(haddr) {
                    ScanResult::PmdNone
                } else {
                    ScanResult::PmdNull
                }
            }
        }
    }

    /// `hpage_collapse_scan_pmd` (`collapse_scan_pmd` from 7.2): the per-PTE scan of an
    /// anonymous range, then `collapse_huge_page` if it says go. With mTHP collapse, when
    /// khugepaged may build other orders than the PMD's in this VMA, the scan accepts every
    /// none PTE and `mthp_collapse` picks the blocks and orders from what it saw.
    pub fn hpage_collapse_scan_pmd(
        &mut self,
        pid: Pid,
        haddr: u64,
        cc: CollapseContext,
    ) -> ScanResult {
        self.hpage_collapse_scan_pmd_counted(pid, haddr, cc).result
    }

    /// [`Kernel::hpage_collapse_scan_pmd`], with what khugepaged's slot walk needs of it.
    fn hpage_collapse_scan_pmd_counted(
        &mut self,
        pid: Pid,
        haddr: u64,
        cc: CollapseContext,
    ) -> PmdScan {
        let pmd_only = 1u32 << HPAGE_PMD_ORDER;
        let enabled_orders = match self.mms.get(&pid).and_then(|mm| mm.vmas.find(haddr)) {
            Some(vma) if self.profile.khugepaged_mthp_collapse => {
                let tva = match cc {
                    CollapseContext::Khugepaged => TvaType::Khugepaged,
                    CollapseContext::Madvise => TvaType::ForcedCollapse,
                };
                self.collapse_possible_orders(pid, vma, vma.flags, tva)
            }
            _ => pmd_only,
        };
        let mut limits = self.thp.khugepaged.clone();
        if enabled_orders != pmd_only {
            // Every order's own none limit is applied per block by mthp_collapse.
            limits.max_ptes_none = HPAGE_PMD_NR as u32 - 1;
        }
        let mut t = self.tally_before(pid, haddr);
        t.occupied = vec![false; HPAGE_PMD_NR];
        let result = self.scan_pmd_ptes(pid, haddr, cc, &limits, &mut t);
        self.report(cc, CollapseStage::ScanPmd, pid, haddr, result, &t);
        if result != ScanResult::Succeed {
            return PmdScan {
                result,
                scanned_ptes: t.scanned_ptes,
                said_go: false,
            };
        }
        let scan_report = self.collapse_log.len() - 1;
        let result = if enabled_orders == pmd_only {
            self.collapse_huge_page(pid, haddr, cc, t.swap, HPAGE_PMD_ORDER)
        } else {
            self.mthp_collapse(pid, haddr, cc, &t, enabled_orders)
        };
        self.collapse_log[scan_report].outcome = Some(result);
        if result == ScanResult::Succeed && cc.is_khugepaged() {
            self.khugepaged_state.pages_collapsed += 1;
        }
        PmdScan {
            result,
            scanned_ptes: t.scanned_ptes,
            said_go: true,
        }
    }

    /// `mthp_collapse`: walks the PTE table from its start, trying at each offset the largest
    /// enabled order that the offset's alignment allows whose block has enough occupied PTEs
    /// for that order's none limit, then smaller enabled orders down to order 2. A collapsed
    /// (or already large) block is stepped over; a failure that a smaller block might avoid
    /// tries the next smaller order; any other failure ends the walk. Succeeds if any block
    /// was collapsed.
    fn mthp_collapse(
        &mut self,
        pid: Pid,
        haddr: u64,
        cc: CollapseContext,
        scan: &Tally,
        enabled_orders: u32,
    ) -> ScanResult {
        const MIN_ORDER: u8 = 2;
        let mut last = ScanResult::Fail;
        let (mut collapsed, mut alloc_failed) = (false, false);
        let mut offset = 0usize;
        let mut order = HPAGE_PMD_ORDER;
        'walk: while offset < HPAGE_PMD_NR {
            let nr = 1usize << order;
            let mut advance = false;
            if enabled_orders & (1 << order) != 0 {
                let max_none = self.collapse_limits(cc, order).max_ptes_none as usize;
                let mut occupied = scan.occupied[offset..offset + nr]
                    .iter()
                    .filter(|&&b| b)
                    .count();
                if order == HPAGE_PMD_ORDER {
                    // Swap PTEs the scan accepted count for the PMD-order block.
                    occupied += scan.swap as usize;
                }
                if occupied + max_none >= nr {
                    let start = haddr + (offset as u64) * PAGE_SIZE;
                    let r = self.collapse_huge_page(pid, start, cc, scan.swap, order);
                    match r {
                        ScanResult::Succeed => {
                            collapsed = true;
                            advance = true;
                        }
                        ScanResult::PteMappedHugepage => advance = true,
                        ScanResult::AllocHugePageFail => {
                            alloc_failed = true;
                            last = r;
                        }
                        ScanResult::LackReferencedPage
                        | ScanResult::ExceedNonePte
                        | ScanResult::ExceedSwapPte
                        | ScanResult::ExceedSharedPte
                        | ScanResult::PageLock
                        | ScanResult::PageCount
                        | ScanResult::PageNull
                        | ScanResult::DelPageLru
                        | ScanResult::PteNonPresent
                        | ScanResult::PteUffdWp => last = r,
                        _ => {
                            last = r;
                            break 'walk;
                        }
                    }
                }
            }
            let smaller = enabled_orders & ((1u32 << order) - 1);
            if !advance && order > MIN_ORDER && smaller != 0 {
                order -= 1;
                continue;
            }
            offset += nr;
            // The next block can be no larger than the new offset's alignment.
            order = if offset == 0 {
                HPAGE_PMD_ORDER
            } else {
                (offset.trailing_zeros() as u8).min(HPAGE_PMD_ORDER)
            };
        }
        if collapsed {
            ScanResult::Succeed
        } else if alloc_failed {
            ScanResult::AllocHugePageFail
        } else {
            last
        }
    }

    /// The max_ptes_* limits of one attempt: `collapse_max_ptes_none`,
    /// `collapse_max_ptes_shared` and `collapse_max_ptes_swap`. PMD order: the sysfs values.
    /// Below it (7.2's mTHP collapse): no shared or swap PTE, and max_ptes_none scaled to the
    /// order when it is 511, else 0 (the kernel warns once about other values).
    fn collapse_limits(&self, cc: CollapseContext, order: u8) -> KhugepagedSettings {
        let mut limits = self.thp.khugepaged.clone();
        if cc.is_khugepaged() && order != HPAGE_PMD_ORDER {
            limits.max_ptes_none = if limits.max_ptes_none == HPAGE_PMD_NR as u32 - 1 {
                (1 << order) - 1
            } else {
                0
            };
            limits.max_ptes_shared = 0;
            limits.max_ptes_swap = 0;
        }
        limits
    }

    fn scan_pmd_ptes(
        &self,
        pid: Pid,
        haddr: u64,
        cc: CollapseContext,
        limits: &KhugepagedSettings,
        t: &mut Tally,
    ) -> ScanResult {
        let found = self.find_pmd_or_thp_or_none(pid, haddr);
        if found != ScanResult::Succeed {
            return found;
        }
        let khugepaged = cc.is_khugepaged();
        let Pmd::Table(table) = self.mms[&pid].page_table.pmd(haddr) else {
            unreachable!()
        };
        for (i, pte) in table.iter().enumerate() {
            t.scanned_ptes += 1;
            let p = match *pte {
                Pte::Swap { .. } => match t.count_swap(khugepaged, limits) {
                    Some(stop) => return stop,
                    None => continue,
                },
                Pte::None | Pte::Zero { .. } => match t.count_none_or_zero(khugepaged, limits) {
                    Some(stop) => return stop,
                    None => continue,
                },
                Pte::Present(p) => p,
            };
            t.writable += p.write as u32;
            let folio = self.folio(p.folio);
            if self.profile.scan_anon_check_before_shared && !folio.is_anon() {
                return ScanResult::PageAnon;
            }
            let shared = self.khugepaged_sees_shared(p.folio, p.page as usize);
            self.note_folio_seen(&mut t.folios, p.folio, shared);
            if shared {
                if let Some(stop) = t.count_shared(khugepaged, limits) {
                    return stop;
                }
            }
            if let Some(bit) = t.occupied.get_mut(i) {
                *bit = true;
            }
            if !folio.lru {
                return ScanResult::PageLru;
            }
            if folio.locked {
                return ScanResult::PageLock;
            }
            if !self.profile.scan_anon_check_before_shared && !folio.is_anon() {
                return ScanResult::PageAnon;
            }
            if folio.folio_expected_ref_count() != folio.refcount {
                return ScanResult::PageCount;
            }
            t.count_referenced(khugepaged, p.young, folio.referenced);
        }
        self.anon_pass_verdict(t, khugepaged, true)
    }

    /// `hugepage_vma_revalidate` for a collapse to `order`: the whole PMD range must lie in
    /// the VMA whatever the order (another VMA could share the page table otherwise).
    fn hugepage_vma_revalidate(
        &self,
        pid: Pid,
        haddr: u64,
        cc: CollapseContext,
        expect_anon: bool,
        order: u8,
    ) -> ScanResult {
        let Some(mm) = self.mms.get(&pid) else {
            return ScanResult::AnyProcess;
        };
        if mm.thp_disabled {
            return ScanResult::AnyProcess;
        }
        let Some(vma) = mm.vmas.find(haddr) else {
            return ScanResult::VmaNull;
        };
        if !vma.pmd_block_suitable(haddr) {
            return ScanResult::AddressRange;
        }
        let tva = match cc {
            CollapseContext::Khugepaged => TvaType::Khugepaged,
            CollapseContext::Madvise => TvaType::ForcedCollapse,
        };
        if !self.thp_vma_allowable_order(pid, vma, tva, order) {
            return ScanResult::VmaCheck;
        }
        if expect_anon && (!vma.is_anonymous() || vma.anon_vma.is_none()) {
            return ScanResult::PageAnon;
        }
        ScanResult::Succeed
    }

    /// `collapse_huge_page`: allocate, revalidate, swap in, isolate, copy, install the PMD
    /// (or, below PMD order, the new folio's PTEs in the same page table).
    fn collapse_huge_page(
        &mut self,
        pid: Pid,
        start: u64,
        cc: CollapseContext,
        unmapped: u32,
        order: u8,
    ) -> ScanResult {
        let mut t = self.tally_before(pid, pmd_align_down(start));
        t.order = order;
        // alloc_charge_folio: always succeeds in the model (no fragmentation, no memcg limit);
        // the vmstat event counts PMD-order allocations only.
        if order == HPAGE_PMD_ORDER {
            self.collapse_stats.thp_collapse_alloc += 1;
        }
        let placeholder = FolioOwner::Anon {
            anon_vma: crate::rmap::AnonVmaId(0),
            index: 0,
        };
        let new = self.alloc_folio(order, placeholder, |_| 0);
        let result = self.collapse_huge_page_inner(pid, start, cc, unmapped, new, &mut t);
        if result != ScanResult::Succeed {
            self.folio_put_refs(new, 1);
        }
        self.report(cc, CollapseStage::CollapseHugePage, pid, start, result, &t);
        result
    }

    fn collapse_huge_page_inner(
        &mut self,
        pid: Pid,
        start: u64,
        cc: CollapseContext,
        unmapped: u32,
        new: FolioId,
        t: &mut Tally,
    ) -> ScanResult {
        let order = t.order;
        let nr = 1usize << order;
        let haddr = pmd_align_down(start);
        let r = self.hugepage_vma_revalidate(pid, haddr, cc, true, order);
        if r != ScanResult::Succeed {
            return r;
        }
        let r = self.find_pmd_or_thp_or_none(pid, haddr);
        if r != ScanResult::Succeed {
            return r;
        }
        let vma = self.mms[&pid]
            .vmas
            .find(haddr)
            .cloned()
            .expect("revalidated");
        if unmapped > 0 {
            // __collapse_huge_page_swapin: a read fault on every swap PTE of the block; below
            // PMD order the first swap PTE ends the attempt instead.
            for i in 0..nr {
                let addr = start + i as u64 * PAGE_SIZE;
                if let Pte::Swap { entry, exclusive } = self.mms[&pid].page_table.pte(addr) {
                    if order != HPAGE_PMD_ORDER {
                        return ScanResult::ExceedSwapPte;
                    }
                    if self
                        .do_swap_page(pid, &vma, addr, entry, exclusive, Access::Read)
                        .is_err()
                    {
                        return ScanResult::Fail;
                    }
                }
            }
        }
        let r = self.collapse_huge_page_isolate(pid, start, cc, t);
        if r != ScanResult::Succeed {
            return r;
        }
        // Copy: holes and zero pages become zeroed subpages.
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let mut data = vec![0u64; nr];
        let ptes: Vec<Pte> = (0..nr)
            .map(|i| self.mms[&pid].page_table.pte(start + i as u64 * PAGE_SIZE))
            .collect();
        for (i, pte) in ptes.iter().enumerate() {
            if let Pte::Present(p) = pte {
                data[i] = self.folio(p.folio).pages[p.page as usize].data;
            }
        }
        // Release the sources (__collapse_huge_page_copy_succeeded): each PTE's rmap and
        // reference; swap cache freed when unmapped. The PTEs themselves need no clearing:
        // the new folio's PMD or PTEs replace the whole block below. Up to 6.16 PTE by PTE,
        // so a large source folio is partially mapped after its first page; from 6.17 a run
        // of PTEs mapping consecutive pages of one large folio goes in one batch.
        let mut i = 0;
        while i < nr {
            let Pte::Present(p) = ptes[i] else {
                i += 1;
                continue;
            };
            let mut batch = 1;
            if self.profile.collapse_batches_large_folio_ptes && self.folio(p.folio).is_large() {
                while let Some(Pte::Present(q)) = ptes.get(i + batch) {
                    if q.folio != p.folio || q.page as usize != p.page as usize + batch {
                        break;
                    }
                    batch += 1;
                }
            }
            let f = self.folios.folio_mut(p.folio);
            let queued = rmap::folio_remove_rmap_ptes(f, p.page as usize, batch, mm_id, tracking);
            self.vmstat.thp_deferred_split_page += queued as u64;
            if self.folio(p.folio).swapcache.is_some() && !self.folio(p.folio).folio_mapped() {
                self.folio_free_swap(p.folio);
            }
            self.folio_put_refs(p.folio, batch as i32);
            i += batch;
        }
        let anon_vma = vma.anon_vma.expect("revalidated");
        let index = vma.linear_page_index(start);
        let f = self.folios.folio_mut(new);
        f.owner = FolioOwner::Anon { anon_vma, index };
        for (page, d) in f.pages.iter_mut().zip(data) {
            page.data = d;
        }
        if order == HPAGE_PMD_ORDER {
            self.mms
                .get_mut(&pid)
                .expect("live")
                .page_table
                .set_pmd(haddr, Pmd::None);
            self.map_anon_folio_pmd(pid, &vma, haddr, new);
        } else {
            self.map_anon_folio_pte_nopf(pid, &vma, start, new);
        }
        ScanResult::Succeed
    }

    /// `map_anon_folio_pte_nopf`: maps a new exclusive anonymous folio (holding its allocation
    /// reference) by one young PTE per page from `start`, writable and dirty in a writable
    /// VMA.
    fn map_anon_folio_pte_nopf(&mut self, pid: Pid, vma: &Vma, start: u64, folio: FolioId) {
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let f = self.folios.folio_mut(folio);
        let nr = f.nr_pages();
        rmap::folio_add_new_anon_rmap(f, mm_id, tracking);
        // One reference per PTE; the allocation reference becomes the first one.
        f.refcount = nr as i32;
        let write = vma.flags.contains(crate::vma::VmFlags::WRITE);
        let pt = &mut self.mms.get_mut(&pid).expect("live").page_table;
        for i in 0..nr {
            pt.set_pte(
                start + i as u64 * PAGE_SIZE,
                Pte::Present(crate::page_table::PresentPte {
                    folio,
                    page: i as u16,
                    write,
                    young: true,
                    dirty: write,
                }),
            );
        }
    }

    /// `__collapse_huge_page_isolate`: the second pass over the block's PTEs, with the PMD
    /// detached, under the limits of the attempt's order. Below PMD order a PTE mapping a
    /// folio already at least that large ends the attempt (SCAN_PTE_MAPPED_HUGEPAGE).
    fn collapse_huge_page_isolate(
        &mut self,
        pid: Pid,
        start: u64,
        cc: CollapseContext,
        t: &mut Tally,
    ) -> ScanResult {
        let order = t.order;
        let limits = self.collapse_limits(cc, order);
        let khugepaged = cc.is_khugepaged();
        for i in 0..1usize << order {
            let pte = self.mms[&pid].page_table.pte(start + i as u64 * PAGE_SIZE);
            let p = match pte {
                Pte::None | Pte::Zero { .. } => match t.count_none_or_zero(khugepaged, &limits) {
                    Some(stop) => return stop,
                    None => continue,
                },
                Pte::Swap { .. } => return ScanResult::PteNonPresent,
                Pte::Present(p) => p,
            };
            let folio = self.folio(p.folio);
            if !folio.is_anon() {
                return ScanResult::PageAnon;
            }
            let shared = self.khugepaged_sees_shared(p.folio, p.page as usize);
            self.note_folio_seen(&mut t.folios, p.folio, shared);
            if shared {
                if let Some(stop) = t.count_shared(khugepaged, &limits) {
                    return stop;
                }
            }
            if order != HPAGE_PMD_ORDER && folio.order >= order {
                return ScanResult::PteMappedHugepage;
            }
            if folio.locked {
                return ScanResult::PageLock;
            }
            if folio.folio_expected_ref_count() != folio.refcount {
                return ScanResult::PageCount;
            }
            t.writable += p.write as u32;
            t.count_referenced(khugepaged, p.young, folio.referenced);
        }
        self.anon_pass_verdict(t, khugepaged, false)
    }

    /// `hpage_collapse_scan_file` then `collapse_file` for the file range starting at page
    /// `start` of `inode`, seen from `pid`'s mapping at `haddr`.
    pub fn hpage_collapse_scan_file(
        &mut self,
        pid: Pid,
        haddr: u64,
        inode: InodeId,
        start: u64,
        cc: CollapseContext,
    ) -> ScanResult {
        let mut t = self.tally_before(pid, haddr);
        let mut present = 0u32;
        let limits = self.thp.khugepaged.clone();
        let mut result = ScanResult::Succeed;
        let end = start + HPAGE_PMD_NR as u64;
        // The entries of the range in index order: a folio that starts before the range but
        // reaches into it, then every entry that starts inside (holes are simply absent).
        let cache = &self.inode(inode).cache;
        let leading = self
            .inode(inode)
            .lookup(start)
            .filter(|(first, _)| *first < start);
        let entries: Vec<(u64, CacheEntry)> = leading
            .into_iter()
            .chain(cache.range(start..end).map(|(i, e, _)| (i, e)))
            .collect();
        for (first, entry) in entries {
            match entry {
                CacheEntry::Swap(_) => {
                    t.swap += 1;
                    if cc.is_khugepaged() && t.swap > limits.max_ptes_swap {
                        result = ScanResult::ExceedSwapPte;
                        break;
                    }
                }
                CacheEntry::Folio(f) => {
                    let folio = self.folio(f);
                    if folio.order == HPAGE_PMD_ORDER && first == start {
                        result = ScanResult::PteMappedHugepage;
                        break;
                    }
                    if !folio.lru {
                        result = ScanResult::PageLru;
                        break;
                    }
                    if folio.folio_expected_ref_count() != folio.refcount {
                        result = ScanResult::PageCount;
                        break;
                    }
                    let last = first + folio.nr_pages() as u64;
                    present += (last.min(end) - first.max(start)) as u32;
                }
            }
        }
        t.none_or_zero = HPAGE_PMD_NR as u32 - present - t.swap;
        t.present = present;
        if result == ScanResult::Succeed
            && cc.is_khugepaged()
            && present < HPAGE_PMD_NR as u32 - limits.max_ptes_none
        {
            result = ScanResult::ExceedNonePte;
        }
        if result == ScanResult::Succeed {
            let madvise = cc == CollapseContext::Madvise;
            // Before 6.6, MADV_COLLAPSE retracts only its own page table and maps the THP
            // there itself ([`crate::profile::Switch::RetractPageTablesEveryMm`]).
            let target_only = madvise && !self.profile.retract_page_tables_every_mm;
            let target_pmd = self.find_pmd_or_thp_or_none(pid, haddr);
            result = self.collapse_file(inode, start, target_only.then_some(pid));
            if result == ScanResult::Succeed && madvise {
                result = if target_only {
                    self.set_huge_pmd_after_retract(pid, haddr, target_pmd)
                } else {
                    // MADV_COLLAPSE maps the new THP through collapse_pte_mapped_thp.
                    ScanResult::PteMappedHugepage
                };
            }
        }
        self.report(cc, CollapseStage::ScanFile, pid, haddr, result, &t);
        result
    }

    /// The target's part of 6.1's `retract_page_tables` for MADV_COLLAPSE: a VMA with an
    /// anon_vma is left alone (SCAN_FAIL: the kernel's `is_target` is not set yet there), a
    /// range that had no PTE table keeps `find_pmd_or_thp_or_none`'s verdict from before the
    /// collapse, and otherwise the emptied table is gone and the THP is mapped by a PMD
    /// (`set_huge_pmd`).
    fn set_huge_pmd_after_retract(
        &mut self,
        pid: Pid,
        haddr: u64,
        before: ScanResult,
    ) -> ScanResult {
        let anon_vma = self
            .mms
            .get(&pid)
            .and_then(|m| m.vmas.find(haddr))
            .is_none_or(|v| v.anon_vma.is_some());
        if anon_vma {
            return ScanResult::Fail;
        }
        if before != ScanResult::Succeed {
            return before;
        }
        let mut t = self.tally_before(pid, haddr);
        self.collapse_pte_mapped_thp_inner(pid, haddr, true, &mut t)
    }

    /// Whether a page-cache folio of `[start, end)` is dirty (what makes collapse_file fail
    /// with SCAN_PAGE_DIRTY_OR_WRITEBACK on a regular file).
    fn file_range_dirty(&self, inode: InodeId, start: u64, end: u64) -> bool {
        self.inode(inode)
            .cache
            .range(start..end)
            .any(|(_, e, _)| matches!(e, CacheEntry::Folio(f) if self.folio(f).dirty))
    }

    /// `collapse_file` (shmem, or a regular file with READ_ONLY_THP_FOR_FS): builds a PMD THP
    /// in the page cache from the range's pages, unmapping them everywhere, then retracts the
    /// empty page tables.
    /// `only`: retract page tables in that MM alone (MADV_COLLAPSE before 6.6).
    fn collapse_file(&mut self, inode: InodeId, start: u64, only: Option<Pid>) -> ScanResult {
        let end = start + HPAGE_PMD_NR as u64;
        if self.inode(inode).cache.range(start..end).next().is_none()
            && self.inode(inode).lookup(start).is_none()
        {
            return ScanResult::Truncated;
        }
        if !self.inode(inode).is_shmem() && self.file_range_dirty(inode, start, end) {
            // A dirty folio (the model has no writeback in flight): SCAN_FAIL, from 7.2 its own
            // SCAN_PAGE_DIRTY_OR_WRITEBACK, which MADV_COLLAPSE answers with a write-back.
            return if self.profile.madvise_collapse_writes_back_dirty {
                ScanResult::PageDirtyOrWriteback
            } else {
                ScanResult::Fail
            };
        }
        self.collapse_stats.thp_collapse_alloc += 1;
        // Swap in shmem swap entries; read missing regular-file pages.
        let mut data = vec![0u64; HPAGE_PMD_NR];
        let mut old: Vec<FolioId> = Vec::new();
        let mut index = start;
        while index < end {
            let found = self.inode(inode).lookup(index);
            let folio = match found {
                Some((_, CacheEntry::Swap(_))) => match self.shmem_get_folio(inode, index, None) {
                    Ok((f, _)) => f,
                    Err(_) => return ScanResult::Fail,
                },
                Some((_, CacheEntry::Folio(f))) => f,
                // A regular file's missing page is read (page_cache_sync_readahead); readahead
                // stops at the end of the file, so past it there is no folio to lock: SCAN_FAIL.
                // A shmem hole, also past the end, is left for the new THP to fill with zeros.
                None if !self.inode(inode).is_shmem() => {
                    if index >= self.inode(inode).size_pages {
                        return ScanResult::Fail;
                    }
                    self.filemap_get_folio(inode, index).0
                }
                None => {
                    index += 1;
                    continue;
                }
            };
            let f = self.folio(folio);
            let first = f.index();
            for (i, pg) in f.pages.iter().enumerate() {
                let idx = first + i as u64;
                if idx >= start && idx < end {
                    data[(idx - start) as usize] = pg.data;
                }
            }
            index = first + f.nr_pages() as u64;
            old.push(folio);
        }
        // Unmap the old folios from every MM and drop them from the page cache.
        let shmem = self.inode(inode).is_shmem();
        for f in old {
            for hit in self.rmap_walk(f) {
                match hit {
                    crate::huge_memory::RmapHit::Pmd { pid, addr } => self.zap_huge_pmd(pid, addr),
                    crate::huge_memory::RmapHit::Pte { pid, addr, .. } => self.zap_pte(pid, addr),
                }
            }
            let first = self.folio(f).index();
            let nr = self.folio(f).nr_pages() as i32;
            self.inode_mut(inode).cache.remove(first);
            self.folio_put_refs(f, nr);
        }
        let new = self.alloc_folio(
            HPAGE_PMD_ORDER,
            FolioOwner::PageCache {
                inode,
                index: start,
            },
            |i| data[i],
        );
        let f = self.folios.folio_mut(new);
        f.swapbacked = shmem;
        f.dirty = shmem;
        f.refcount = HPAGE_PMD_NR as i32;
        self.inode_mut(inode)
            .cache
            .insert(start, CacheEntry::Folio(new), HPAGE_PMD_ORDER);
        self.retract_page_tables(inode, start, only);
        ScanResult::Succeed
    }

    /// `retract_page_tables`: in every MM, a now-empty PTE table over the file range is
    /// removed, leaving the PMD none, where the VMA has no anon_vma and covers the aligned
    /// 2 MiB.
    fn retract_page_tables(&mut self, inode: InodeId, pgoff: u64, only: Option<Pid>) {
        let mut targets = Vec::new();
        for (pid, mm) in self.mms.iter() {
            if only.is_some_and(|o| o != pid) {
                continue;
            }
            for vma in mm.vmas.iter() {
                if vma.inode() != Some(inode) || vma.anon_vma.is_some() {
                    continue;
                }
                let Some(addr) = vma.address_of(pgoff) else {
                    continue;
                };
                if addr % HPAGE_PMD_SIZE != 0 || addr + HPAGE_PMD_SIZE > vma.end {
                    continue;
                }
                if let Pmd::Table(t) = mm.page_table.pmd(addr) {
                    if t.iter().all(|p| p.is_none()) {
                        targets.push((pid, addr));
                    }
                }
            }
        }
        for (pid, addr) in targets {
            self.mms
                .get_mut(&pid)
                .expect("live")
                .page_table
                .free_pmd_range(addr);
        }
    }

    /// `collapse_pte_mapped_thp`: maps the page-cache THP at `haddr` by a PMD (with
    /// `install_pmd`) or only removes its PTE table (khugepaged).
    pub fn collapse_pte_mapped_thp(
        &mut self,
        pid: Pid,
        haddr: u64,
        install_pmd: bool,
        cc: CollapseContext,
    ) -> ScanResult {
        let mut t = self.tally_before(pid, haddr);
        let result = self.collapse_pte_mapped_thp_inner(pid, haddr, install_pmd, &mut t);
        self.report(cc, CollapseStage::PteMappedThp, pid, haddr, result, &t);
        result
    }

    fn collapse_pte_mapped_thp_inner(
        &mut self,
        pid: Pid,
        haddr: u64,
        install_pmd: bool,
        t: &mut Tally,
    ) -> ScanResult {
        let Some(vma) = self.mms.get(&pid).and_then(|m| m.vmas.find(haddr)).cloned() else {
            return ScanResult::VmaCheck;
        };
        if vma.is_anonymous() || haddr < vma.start || haddr + HPAGE_PMD_SIZE > vma.end {
            return ScanResult::VmaCheck;
        }
        if matches!(self.mms[&pid].page_table.pmd(haddr), Pmd::Huge(_)) {
            return ScanResult::PmdMapped;
        }
        if !self.thp_vma_allowable_order(pid, &vma, TvaType::ForcedCollapse, HPAGE_PMD_ORDER) {
            return ScanResult::VmaCheck;
        }
        let inode = vma.inode().expect("file VMA");
        let index = vma.linear_page_index(haddr);
        let folio = match self.inode(inode).lookup(index) {
            Some((_, CacheEntry::Folio(f))) => f,
            _ => return ScanResult::PageNull,
        };
        if self.folio(folio).order != HPAGE_PMD_ORDER || self.folio(folio).index() != index {
            return ScanResult::PageCompound;
        }
        if let Pmd::Table(table) = self.mms[&pid].page_table.pmd(haddr).clone() {
            for (i, pte) in table.iter().enumerate() {
                match *pte {
                    Pte::None => t.none_or_zero += 1,
                    Pte::Present(p) if p.folio == folio && p.page as usize == i => {
                        t.writable += p.write as u32
                    }
                    Pte::Present(_) | Pte::Zero { .. } => return ScanResult::Fail,
                    Pte::Swap { .. } => return ScanResult::PteNonPresent,
                }
            }
            let mm_id = self.mms[&pid].mm_id;
            let tracking = self.profile.mm_id;
            let mut mapped = 0;
            for (i, pte) in table.iter().enumerate() {
                if let Pte::Present(p) = *pte {
                    // A page-cache folio: never queued for deferred split.
                    let _ = rmap::folio_remove_rmap_ptes(
                        self.folios.folio_mut(folio),
                        i,
                        1,
                        mm_id,
                        tracking,
                    );
                    if p.dirty {
                        self.folios.folio_mut(folio).dirty = true;
                    }
                    mapped += 1;
                }
            }
            self.folio_put_refs(folio, mapped);
            self.mms
                .get_mut(&pid)
                .expect("live")
                .page_table
                .free_pmd_range(haddr);
        }
        if install_pmd {
            self.do_set_pmd(pid, &vma, haddr, folio, false);
        }
        ScanResult::Succeed
    }

    /// MADV_COLLAPSE over `[start, start + len)` with the decision record of every collapse
    /// attempt it made (also kept in [`Kernel::collapse_log`]).
    pub fn madvise_collapse_explained(
        &mut self,
        pid: Pid,
        start: u64,
        len: u64,
    ) -> (Result<(), Errno>, Vec<CollapseReport>) {
        let from = self.collapse_log.len();
        let r = self.madvise_collapse(pid, start, len);
        (r, self.collapse_log[from..].to_vec())
    }

    /// MADV_COLLAPSE over `[start, start + len)` (`madvise_collapse`, once per VMA).
    pub fn madvise_collapse(&mut self, pid: Pid, start: u64, len: u64) -> Result<(), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let end = start
            .checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .ok_or(Errno::EINVAL)?;
        let mapped = self.mm(pid)?.vmas.covers(start, end);
        let vmas: Vec<(u64, u64)> = self
            .mm(pid)?
            .vmas
            .overlapping(start, end)
            .map(|v| (v.start, v.end))
            .collect();
        let has_page_ro = self.profile.collapse_requires_writable_pte;
        for (vstart, vend) in vmas {
            let vma = self
                .mm(pid)?
                .vmas
                .find(vstart)
                .cloned()
                .ok_or(Errno::ENOMEM)?;
            if !self.thp_vma_allowable_order(pid, &vma, TvaType::ForcedCollapse, HPAGE_PMD_ORDER) {
                return Err(Errno::EINVAL);
            }
            let hstart = (start.max(vstart) + HPAGE_PMD_SIZE - 1) & !(HPAGE_PMD_SIZE - 1);
            let hend = pmd_align_down(end.min(vend));
            if hend < hstart && !self.profile.madvise_collapse_short_range_succeeds {
                // No PMD boundary inside the range: `(hend - hstart) >> HPAGE_PMD_SHIFT`
                // wraps around and cannot equal the 0 collapses, so the call fails with
                // the errno of its initial SCAN_FAIL.
                return Err(ScanResult::Fail.madvise_collapse_errno());
            }
            let blocks = if hend > hstart {
                (hend - hstart) / HPAGE_PMD_SIZE
            } else {
                0
            };
            let mut thps = 0;
            let mut last_fail = ScanResult::Succeed;
            let mut addr = hstart;
            while addr < hend {
                let r = self.hugepage_vma_revalidate(
                    pid,
                    addr,
                    CollapseContext::Madvise,
                    false,
                    HPAGE_PMD_ORDER,
                );
                let mut result = if r != ScanResult::Succeed {
                    last_fail = r;
                    break;
                } else {
                    let vma = self.mms[&pid]
                        .vmas
                        .find(addr)
                        .cloned()
                        .expect("revalidated");
                    match vma.backing {
                        VmaBacking::Anon => {
                            self.hpage_collapse_scan_pmd(pid, addr, CollapseContext::Madvise)
                        }
                        VmaBacking::Shmem(inode) | VmaBacking::File(inode) => {
                            let index = vma.linear_page_index(addr);
                            let mut r = self.hpage_collapse_scan_file(
                                pid,
                                addr,
                                inode,
                                index,
                                CollapseContext::Madvise,
                            );
                            // collapse_single_pmd: a dirty folio (SCAN_PAGE_DIRTY_OR_WRITEBACK,
                            // a regular file's, from 7.2) is written back and the collapse
                            // tried once more.
                            if r == ScanResult::PageDirtyOrWriteback {
                                let end = index + HPAGE_PMD_NR as u64;
                                self.filemap_write_and_wait_range(inode, index, end);
                                r = self.hpage_collapse_scan_file(
                                    pid,
                                    addr,
                                    inode,
                                    index,
                                    CollapseContext::Madvise,
                                );
                            }
                            r
                        }
                    }
                };
                if result == ScanResult::PteMappedHugepage {
                    result =
                        self.collapse_pte_mapped_thp(pid, addr, true, CollapseContext::Madvise);
                }
                match result {
                    ScanResult::Succeed | ScanResult::PmdMapped => thps += 1,
                    r if r.madvise_collapse_continues(has_page_ro) => last_fail = r,
                    r => {
                        last_fail = r;
                        break;
                    }
                }
                addr += HPAGE_PMD_SIZE;
            }
            if thps != blocks {
                return Err(last_fail.madvise_collapse_errno());
            }
        }
        if mapped {
            Ok(())
        } else {
            Err(Errno::ENOMEM)
        }
    }

    /// One khugepaged wake-up (`khugepaged_do_scan`): scans up to `pages_to_scan` units from
    /// the cursor, stopping after passing the list head twice. Does nothing while the thread
    /// is stopped (no PMD THP enabled anywhere). Returns the decision records of the wake-up
    /// (the tail of [`Kernel::collapse_log`]; borrowed, so a caller that ignores them pays
    /// nothing).
    pub fn khugepaged_do_scan(&mut self) -> &[CollapseReport] {
        let from = self.collapse_log.len();
        self.khugepaged_do_scan_inner();
        &self.collapse_log[from..]
    }

    fn khugepaged_do_scan_inner(&mut self) {
        if !self.hugepage_pmd_enabled() {
            return;
        }
        self.khugepaged_state.wakeups += 1;
        let pages = self.thp.khugepaged.pages_to_scan.max(1) as u64;
        let mut progress = 0u64;
        let mut pass_through_head = 0;
        loop {
            if self.khugepaged_state.cursor.is_none() {
                pass_through_head += 1;
            }
            if !self.khugepaged_mm_list.is_empty() && pass_through_head < 2 {
                progress += self.khugepaged_scan_mm_slot(pages - progress);
            } else {
                progress = pages;
            }
            if progress >= pages {
                break;
            }
        }
    }

    /// Wakes khugepaged until `full_scans` has advanced by `n` (or `max_wakeups` pass, for
    /// a thread that is stopped or has nothing to scan), one period of virtual time per
    /// wake-up. Returns the wake-ups used; [`Kernel::khugepaged_run_until`] stops on a
    /// condition and returns the records.
    pub fn khugepaged_run_full_scans(&mut self, n: u64, max_wakeups: u64) -> u64 {
        let target = self.khugepaged_state.full_scans + n;
        let mut used = 0;
        while self.khugepaged_state.full_scans < target && used < max_wakeups {
            self.khugepaged_wake();
            used += 1;
        }
        used
    }

    /// `khugepaged_scan_mm_slot`: scans the cursor's MM; returns the progress made.
    fn khugepaged_scan_mm_slot(&mut self, budget: u64) -> u64 {
        let (pid, mut address) = match self.khugepaged_state.cursor {
            Some(c) => c,
            None => (self.khugepaged_mm_list[0], 0),
        };
        self.khugepaged_state.cursor = Some((pid, address));
        let mut progress = 1;
        let mut finished_mm = true;
        if self.mms.contains_key(&pid) {
            let vmas: Vec<u64> = self.mms[&pid].vmas.iter().map(|v| v.start).collect();
            let walk_from = address;
            'vmas: for vstart in vmas {
                let Some(vma) = self.mms[&pid].vmas.find(vstart).cloned() else {
                    continue;
                };
                if vma.end <= walk_from {
                    // The VMA iterator starts at the cursor: VMAs before it are not visited.
                    continue;
                }
                // Every VMA the walk skips costs one page of the budget; a VMA without a
                // whole PMD range that the cursor has not passed costs nothing.
                if self.collapse_possible_orders(pid, &vma, vma.flags, TvaType::Khugepaged) == 0 {
                    progress += 1;
                    continue;
                }
                let hstart = (vma.start + HPAGE_PMD_SIZE - 1) & !(HPAGE_PMD_SIZE - 1);
                let hend = pmd_align_down(vma.end);
                if address > hend {
                    progress += 1;
                    continue;
                }
                address = address.max(hstart);
                while address < hend {
                    // What the range costs of the budget: the whole range up to 6.x; from 7.2
                    // the PTEs the scan looked at (1 without a PTE table), and for a file 1 if
                    // the range is already a THP.
                    let mut cost = HPAGE_PMD_NR as u64;
                    let per_pte = self.profile.khugepaged_progress_counts_scanned_ptes;
                    let lock_dropped = match vma.backing {
                        VmaBacking::Anon => {
                            let scan = self.hpage_collapse_scan_pmd_counted(
                                pid,
                                address,
                                CollapseContext::Khugepaged,
                            );
                            if per_pte {
                                cost = scan.scanned_ptes.max(1) as u64;
                            }
                            // The scan said go: the mmap lock was dropped for the collapse.
                            scan.said_go
                        }
                        VmaBacking::Shmem(inode) | VmaBacking::File(inode) => {
                            let index = vma.linear_page_index(address);
                            let mut r = self.hpage_collapse_scan_file(
                                pid,
                                address,
                                inode,
                                index,
                                CollapseContext::Khugepaged,
                            );
                            if per_pte && r == ScanResult::PteMappedHugepage {
                                cost = 1;
                            }
                            if r == ScanResult::PteMappedHugepage {
                                r = self.collapse_pte_mapped_thp(
                                    pid,
                                    address,
                                    false,
                                    CollapseContext::Khugepaged,
                                );
                                if r == ScanResult::PmdMapped {
                                    r = ScanResult::Succeed;
                                }
                            }
                            if r == ScanResult::Succeed {
                                self.khugepaged_state.pages_collapsed += 1;
                            }
                            // The file scan always runs with the mmap lock dropped.
                            true
                        }
                    };
                    address += HPAGE_PMD_SIZE;
                    progress += cost;
                    self.khugepaged_state.cursor = Some((pid, address));
                    if lock_dropped || progress >= budget {
                        finished_mm = false;
                        break 'vmas;
                    }
                }
            }
        }
        if finished_mm {
            // Move on to the next MM; past the last one a full scan is complete.
            let pos = self.khugepaged_mm_list.iter().position(|&p| p == pid);
            let next = pos
                .and_then(|i| self.khugepaged_mm_list.get(i + 1))
                .copied();
            if !self.mms.contains_key(&pid) {
                self.khugepaged_mm_list.retain(|&p| p != pid);
            }
            match next {
                Some(n) => self.khugepaged_state.cursor = Some((n, 0)),
                None => {
                    self.khugepaged_state.cursor = None;
                    self.khugepaged_state.full_scans += 1;
                }
            }
        }
        progress
    }
}
