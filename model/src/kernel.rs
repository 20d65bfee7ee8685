//! The modelled machine: processes and their MMs, all folios, inodes, the swap device, the
//! THP settings and the kernel profile. Every user-visible operation is a method of
//! [`Kernel`], defined in the module named after the kernel code it mirrors (faults in
//! `memory`, THP paths in `huge_memory`, madvise in `madvise`, ...).

use std::collections::BTreeSet;

use crate::errno::Errno;
use crate::filemap::{Inode, InodeId};
use crate::folio::{Folio, FolioId, FolioOwner, FolioStore};
use crate::mm::Mm;
use crate::mm_id::MmId;
use crate::profile::KernelProfile;
use crate::rmap::AnonVmaId;
use crate::swap::SwapDevice;
use crate::thp_settings::ThpSettings;
use crate::vma::Vma;

/// A process id in the model (the first process is 1).
pub type Pid = u32;

/// The /proc/vmstat counters the model counts, by their /proc/vmstat names, for
/// [`Kernel::vmstat_read`]. Each is counted where the kernel calls `count_vm_event` for it:
/// thp_fault_alloc in `do_huge_pmd_anonymous_page` (anonymous memory only), thp_file_alloc in
/// `shmem_get_folio_gfp` (`shmem_add_to_page_cache` in 6.1) for PMD-sized shmem folios,
/// thp_split_pmd in `__split_huge_pmd_locked`, thp_split_page in `__folio_split`,
/// thp_deferred_split_page in `deferred_split_folio`, pswpin in `swap_read_folio`'s I/O
/// paths, pswpout and thp_swpout in `count_swpout_vm_event`, thp_collapse_alloc in
/// `alloc_charge_folio`, thp_scan_exceed_*_pte in `hpage_collapse_scan_pmd`,
/// `__collapse_huge_page_isolate` and `hpage_collapse_scan_file`.
pub const VMSTAT_NAMES: [&str; 12] = [
    "thp_fault_alloc",
    "thp_file_alloc",
    "thp_split_pmd",
    "thp_split_page",
    "thp_deferred_split_page",
    "pswpin",
    "pswpout",
    "thp_swpout",
    "thp_collapse_alloc",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
];

/// Event counters the kernel exposes in /proc/vmstat, for the ones the model produces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmStat {
    pub thp_fault_alloc: u64,
    pub thp_fault_fallback: u64,
    pub thp_file_alloc: u64,
    /// The per-size stat `hugepages-<size>/stats/anon_fault_alloc` by order (6.10+; counted
    /// by `count_mthp_stat` for every anonymous large folio allocated at fault, the PMD-sized
    /// one included).
    pub anon_fault_alloc: [u64; crate::HPAGE_PMD_ORDER as usize + 1],
    pub thp_split_pmd: u64,
    pub thp_split_page: u64,
    pub thp_deferred_split_page: u64,
    pub pswpin: u64,
    pub pswpout: u64,
    pub thp_swpout: u64,
    pub cow_copies: u64,
    pub cow_reuses: u64,
}

/// The whole modelled system.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub profile: KernelProfile,
    pub thp: ThpSettings,
    pub folios: FolioStore,
    pub(crate) mms: crate::mm::MmTable,
    pub(crate) inodes: Vec<Inode>,
    pub(crate) swap: Option<SwapDevice>,
    pub vmstat: VmStat,
    /// CONFIG_READ_ONLY_THP_FOR_FS: khugepaged and MADV_COLLAPSE may build THPs in the page
    /// cache of regular files opened read-only. Off on this host and on Debian's kernels;
    /// gone from 7.2 (see [`Kernel::regular_file_thp`]).
    pub read_only_thp_for_fs: bool,
    /// khugepaged's list of registered MMs (`khugepaged_scan.mm_head`), in scan order.
    pub(crate) khugepaged_mm_list: Vec<Pid>,
    /// khugepaged's cursor and counters.
    pub khugepaged_state: crate::khugepaged::KhugepagedState,
    /// Collapse-related vmstat events.
    pub collapse_stats: crate::khugepaged::CollapseStats,
    /// Reports of every collapse scan and attempt, oldest first.
    pub(crate) collapse_log: Vec<crate::khugepaged::CollapseReport>,
    /// Collapse reports carry the range's pictures and the sharing predicate's answer per
    /// folio (on by default). Off, they keep the result and counts only, and a scan costs
    /// what it did before the records grew (the selftest harness's runs, where nobody looks).
    pub decision_detail: bool,
    /// Virtual time since boot in microseconds (see `clock.rs`).
    pub(crate) clock_us: u64,
    /// Sleep time not yet turned into a khugepaged wake-up.
    pub(crate) khugepaged_slept_us: u64,
    next_pid: Pid,
    next_anon_vma: u32,
    mm_ids_in_use: BTreeSet<MmId>,
}

impl Kernel {
    /// A /proc/vmstat counter by its name (one of [`VMSTAT_NAMES`]). None for a counter the
    /// model does not count: reading it as 0 would hide a difference from the kernel.
    pub fn vmstat_read(&self, name: &str) -> Option<u64> {
        let v = &self.vmstat;
        let c = &self.collapse_stats;
        Some(match name {
            "thp_fault_alloc" => v.thp_fault_alloc,
            "thp_file_alloc" => v.thp_file_alloc,
            "thp_split_pmd" => v.thp_split_pmd,
            "thp_split_page" => v.thp_split_page,
            "thp_deferred_split_page" => v.thp_deferred_split_page,
            "pswpin" => v.pswpin,
            "pswpout" => v.pswpout,
            "thp_swpout" => v.thp_swpout,
            "thp_collapse_alloc" => c.thp_collapse_alloc,
            "thp_scan_exceed_none_pte" => c.thp_scan_exceed_none_pte,
            "thp_scan_exceed_swap_pte" => c.thp_scan_exceed_swap_pte,
            "thp_scan_exceed_share_pte" => c.thp_scan_exceed_share_pte,
            _ => return None,
        })
    }

    /// Whether khugepaged and MADV_COLLAPSE may build THPs in a regular file's page cache
    /// (`file_thp_enabled`): with CONFIG_READ_ONLY_THP_FOR_FS before 7.2; from 7.2 when the
    /// filesystem supports PMD-order folios, which the model's disk filesystem does (as ext4
    /// and xfs do).
    pub fn regular_file_thp(&self) -> bool {
        self.read_only_thp_for_fs || self.profile.file_thp_without_read_only_config
    }

    /// A machine running `profile` with boot-default THP settings and one process (pid 1)
    /// with an empty address space: [`Kernel::boot`] then [`Kernel::spawn`], kept for the
    /// callers (the selftest harness, most tests) that want one process ready.
    pub fn new(profile: KernelProfile) -> Kernel {
        let mut k = Kernel::boot(profile);
        k.spawn();
        k
    }

    /// A machine running `profile` with boot-default THP settings and no process yet: create
    /// them with [`Kernel::spawn`] (the first gets pid 1) and [`Kernel::fork`].
    pub fn boot(profile: KernelProfile) -> Kernel {
        Kernel {
            profile,
            thp: ThpSettings::default(),
            folios: FolioStore::default(),
            mms: Default::default(),
            inodes: Vec::new(),
            swap: None,
            vmstat: VmStat::default(),
            read_only_thp_for_fs: false,
            khugepaged_mm_list: Vec::new(),
            khugepaged_state: Default::default(),
            collapse_stats: Default::default(),
            collapse_log: Vec::new(),
            decision_detail: true,
            clock_us: 0,
            khugepaged_slept_us: 0,
            next_pid: 1,
            next_anon_vma: 1,
            mm_ids_in_use: BTreeSet::new(),
        }
    }

    /// Creates a new process with an empty address space (like exec of a fresh program).
    pub fn spawn(&mut self) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        let mm_id = self.alloc_mm_id();
        self.mms.insert(pid, Mm::new(mm_id));
        pid
    }

    /// `mm_alloc_id`: the lowest free id from 1, as the kernel's IDA hands them out.
    pub(crate) fn alloc_mm_id(&mut self) -> MmId {
        let mut id = 1;
        while self.mm_ids_in_use.contains(&id) {
            id += 1;
        }
        self.mm_ids_in_use.insert(id);
        id
    }

    pub(crate) fn free_mm_id(&mut self, id: MmId) {
        self.mm_ids_in_use.remove(&id);
    }

    pub(crate) fn next_pid(&mut self) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        pid
    }

    /// Live process ids, in order.
    pub fn pids(&self) -> Vec<Pid> {
        self.mms.keys().collect()
    }

    /// The MM of `pid` (ESRCH is reported as EINVAL: the model has no signals).
    pub fn mm(&self, pid: Pid) -> Result<&Mm, Errno> {
        self.mms.get(&pid).ok_or(Errno::EINVAL)
    }

    pub(crate) fn mm_mut(&mut self, pid: Pid) -> Result<&mut Mm, Errno> {
        self.mms.get_mut(&pid).ok_or(Errno::EINVAL)
    }

    /// Iterates every MM with its pid.
    pub fn mms(&self) -> impl Iterator<Item = (Pid, &Mm)> {
        self.mms.iter()
    }

    /// The VMA containing `addr` in `pid`.
    pub fn vma(&self, pid: Pid, addr: u64) -> Option<&Vma> {
        self.mms.get(&pid)?.vmas.find(addr)
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id.0 as usize]
    }

    pub(crate) fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id.0 as usize]
    }

    pub(crate) fn add_inode(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        InodeId(self.inodes.len() as u32 - 1)
    }

    /// The active swap device.
    pub fn swap_device(&self) -> Option<&SwapDevice> {
        self.swap.as_ref()
    }

    /// `swapon`: activates a swap device of `pages` pages (EBUSY if one is active).
    pub fn swapon(&mut self, pages: usize) -> Result<(), Errno> {
        if self.swap.is_some() {
            return Err(Errno::EBUSY);
        }
        if pages < 2 {
            return Err(Errno::EINVAL);
        }
        self.swap = Some(SwapDevice::new(pages));
        Ok(())
    }

    /// `anon_vma_prepare`: gives the VMA at `addr` an anon_vma if it has none.
    pub(crate) fn anon_vma_prepare(&mut self, pid: Pid, addr: u64) -> AnonVmaId {
        let next = &mut self.next_anon_vma;
        let vma = self
            .mms
            .get_mut(&pid)
            .and_then(|mm| mm.vmas.find_mut(addr))
            .expect("model bug: anon_vma_prepare without a VMA");
        *vma.anon_vma.get_or_insert_with(|| {
            let id = AnonVmaId(*next);
            *next += 1;
            id
        })
    }

    /// Allocates a folio (refcount 1, the caller's reference).
    pub(crate) fn alloc_folio(
        &mut self,
        order: u8,
        owner: FolioOwner,
        data: impl Fn(usize) -> u64,
    ) -> FolioId {
        self.folios.insert(Folio::new(order, owner, data))
    }

    /// `folio_put_refs`: drops `refs` references and frees the folio when none remain.
    pub(crate) fn folio_put_refs(&mut self, id: FolioId, refs: i32) {
        let folio = self.folios.folio_mut(id);
        folio.refcount -= refs;
        assert!(
            folio.refcount >= 0,
            "model bug: folio {} refcount underflow",
            id.0
        );
        if folio.refcount == 0 {
            debug_assert!(!folio.folio_mapped(), "model bug: freeing a mapped folio");
            debug_assert!(
                folio.swapcache.is_none(),
                "model bug: freeing a swap-cache folio"
            );
            self.folios.remove(id);
        }
    }

    pub(crate) fn folio_get(&mut self, id: FolioId, refs: i32) {
        self.folios.folio_mut(id).refcount += refs;
    }

    /// The folio behind `id`.
    pub fn folio(&self, id: FolioId) -> &Folio {
        self.folios.folio(id)
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::new(KernelProfile::default())
    }
}
