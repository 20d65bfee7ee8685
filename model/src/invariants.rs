//! The invariant checker: recomputes every folio counter, reference count, MM-ID slot and swap
//! count from the page tables of all processes, the page cache and the swap device, and
//! reports every disagreement with the stored values. Tests (and the fuzzer) call it after
//! every operation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::filemap::CacheEntry;
use crate::folio::{FolioId, FolioOwner, ENTIRELY_MAPPED};
use crate::kernel::{Kernel, Pid};
use crate::mm_id::{MmId, MM_ID_DUMMY};
use crate::page_table::{Pmd, Pte};
use crate::swap::SwapEntry;
use crate::vma::Vma;
use crate::{HPAGE_PMD_SIZE, PAGE_SIZE};

/// Everything the checker found wrong, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolations(pub Vec<String>);

impl fmt::Display for InvariantViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} model invariant violation(s):", self.0.len())?;
        for v in &self.0 {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvariantViolations {}

/// What the page tables and caches say about one folio.
#[derive(Default)]
struct Observed {
    pte_maps: Vec<i32>,
    pmd_maps: i32,
    per_mm: BTreeMap<MmId, i32>,
    /// MMs that map each page (for the exclusivity check).
    page_mms: Vec<BTreeSet<MmId>>,
    refs: i32,
}

impl Kernel {
    /// Checks every model invariant; see the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantViolations> {
        let mut errs = Vec::new();
        let mut observed: BTreeMap<FolioId, Observed> = BTreeMap::new();
        let mut swap_refs: BTreeMap<SwapEntry, u32> = BTreeMap::new();
        let mut exclusive_swap: Vec<(Pid, u64, SwapEntry)> = Vec::new();

        for (pid, mm) in self.mms.iter() {
            self.check_vmas(pid, &mut errs);
            for (pmd_start, pmd) in mm.page_table.iter() {
                match pmd {
                    Pmd::None => {}
                    Pmd::HugeZero | Pmd::Huge(_) => {
                        let vma = mm.vmas.find(pmd_start);
                        if !vma.is_some_and(|v| {
                            v.start <= pmd_start && pmd_start + HPAGE_PMD_SIZE <= v.end
                        }) {
                            errs.push(format!(
                                "pid {pid}: huge PMD at {pmd_start:#x} not inside one VMA"
                            ));
                            continue;
                        }
                        let Pmd::Huge(h) = pmd else { continue };
                        let Some(folio) = self.folios.get(h.folio) else {
                            errs.push(format!(
                                "pid {pid}: PMD at {pmd_start:#x} maps freed folio {}",
                                h.folio.0
                            ));
                            continue;
                        };
                        if !folio.is_pmd_mappable() {
                            errs.push(format!(
                                "pid {pid}: PMD at {pmd_start:#x} maps order-{} folio",
                                folio.order
                            ));
                            continue;
                        }
                        self.check_placement(
                            pid,
                            vma.expect("checked"),
                            pmd_start,
                            h.folio,
                            0,
                            &mut errs,
                        );
                        if h.write
                            && folio.is_anon()
                            && vma.is_some_and(|v| v.is_cow_mapping())
                            && !folio.pages[0].anon_exclusive
                        {
                            errs.push(format!("pid {pid}: writable anon PMD at {pmd_start:#x} without PG_anon_exclusive"));
                        }
                        let o = observed
                            .entry(h.folio)
                            .or_insert_with(|| Observed::new(folio.nr_pages()));
                        o.pmd_maps += 1;
                        o.refs += 1;
                        *o.per_mm.entry(mm.mm_id).or_default() += 1;
                        for s in &mut o.page_mms {
                            s.insert(mm.mm_id);
                        }
                    }
                    Pmd::Table(table) => {
                        for (i, pte) in table.iter().enumerate() {
                            if pte.is_none() {
                                continue;
                            }
                            let addr = pmd_start + i as u64 * PAGE_SIZE;
                            let Some(vma) = mm.vmas.find(addr) else {
                                errs.push(format!(
                                    "pid {pid}: PTE at {addr:#x} outside any VMA: {pte:?}"
                                ));
                                continue;
                            };
                            match *pte {
                                Pte::None | Pte::Zero { .. } => {}
                                Pte::Swap { entry, exclusive } => {
                                    if !self.swap.as_ref().is_some_and(|s| s.is_valid(entry)) {
                                        errs.push(format!(
                                            "pid {pid}: swap PTE at {addr:#x} to unused slot {}",
                                            entry.0
                                        ));
                                    }
                                    *swap_refs.entry(entry).or_default() += 1;
                                    if exclusive {
                                        exclusive_swap.push((pid, addr, entry));
                                    }
                                }
                                Pte::Present(p) => {
                                    let Some(folio) = self.folios.get(p.folio) else {
                                        errs.push(format!(
                                            "pid {pid}: PTE at {addr:#x} maps freed folio {}",
                                            p.folio.0
                                        ));
                                        continue;
                                    };
                                    if p.page as usize >= folio.nr_pages() {
                                        errs.push(format!("pid {pid}: PTE at {addr:#x} maps page {} of an order-{} folio", p.page, folio.order));
                                        continue;
                                    }
                                    self.check_placement(
                                        pid,
                                        vma,
                                        addr,
                                        p.folio,
                                        p.page as usize,
                                        &mut errs,
                                    );
                                    if p.write
                                        && folio.is_anon()
                                        && vma.is_cow_mapping()
                                        && !folio.pages[p.page as usize].anon_exclusive
                                    {
                                        errs.push(format!("pid {pid}: writable anon PTE at {addr:#x} without PG_anon_exclusive"));
                                    }
                                    let o = observed
                                        .entry(p.folio)
                                        .or_insert_with(|| Observed::new(folio.nr_pages()));
                                    o.pte_maps[p.page as usize] += 1;
                                    o.refs += 1;
                                    *o.per_mm.entry(mm.mm_id).or_default() += 1;
                                    o.page_mms[p.page as usize].insert(mm.mm_id);
                                }
                            }
                        }
                    }
                }
            }
        }

        // Page cache references and shmem swap entries.
        let mut cache_refs: BTreeMap<FolioId, i32> = BTreeMap::new();
        for (ino, inode) in self.inodes.iter().enumerate() {
            for (index, entry, order) in inode.cache.iter() {
                match entry {
                    CacheEntry::Folio(f) => match self.folios.get(f) {
                        None => errs.push(format!(
                            "inode {ino}: page cache index {index} holds freed folio {}",
                            f.0
                        )),
                        Some(folio) => {
                            let expected = FolioOwner::PageCache {
                                inode: crate::filemap::InodeId(ino as u32),
                                index,
                            };
                            if folio.owner != expected {
                                errs.push(format!(
                                    "inode {ino}: folio {} at index {index} has owner {:?}",
                                    f.0, folio.owner
                                ));
                            }
                            if folio.order != order {
                                errs.push(format!(
                                    "inode {ino}: folio {} of order {} cached as order {order}",
                                    f.0, folio.order
                                ));
                            }
                            // Readahead and faults stop at the end of a regular file and
                            // truncation drops what lies past it (a shmem THP may cover it).
                            if !inode.is_shmem() && index >= inode.size_pages {
                                errs.push(format!(
                                    "inode {ino}: folio {} at index {index}, past the end of \
                                     the file ({} pages)",
                                    f.0, inode.size_pages
                                ));
                            }
                            *cache_refs.entry(f).or_default() += folio.nr_pages() as i32;
                        }
                    },
                    CacheEntry::Swap(e) => {
                        if order != 0 {
                            errs.push(format!(
                                "inode {ino}: swap entry at index {index} cached as order {order}"
                            ));
                        }
                        *swap_refs.entry(e).or_default() += 1
                    }
                }
            }
        }

        // Every folio's counters against what was observed.
        for (id, folio) in self.folios.iter() {
            let nr = folio.nr_pages();
            let o = observed.remove(&id).unwrap_or_else(|| Observed::new(nr));
            let name = format!("folio {} (order {})", id.0, folio.order);
            for i in 0..nr {
                if folio.pages[i].mapcount != o.pte_maps[i] - 1 {
                    errs.push(format!(
                        "{name}: page {i} _mapcount {} but {} PTE mappings",
                        folio.pages[i].mapcount, o.pte_maps[i]
                    ));
                }
                if folio.is_anon()
                    && folio.pages[i].anon_exclusive
                    && folio.folio_precise_page_mapcount(i) > 1
                {
                    errs.push(format!(
                        "{name}: page {i} PG_anon_exclusive with mapcount {}",
                        folio.folio_precise_page_mapcount(i)
                    ));
                }
                // PG_anon_exclusive exists only on anonymous pages (on page-cache pages the
                // kernel's bit means PG_mappedtodisk, which the model does not track).
                if !folio.is_anon() && folio.pages[i].anon_exclusive {
                    errs.push(format!("{name}: page-cache page {i} has PG_anon_exclusive"));
                }
                if folio.is_anon() && folio.pages[i].anon_exclusive && o.page_mms[i].len() > 1 {
                    errs.push(format!(
                        "{name}: page {i} PG_anon_exclusive but mapped by {} MMs",
                        o.page_mms[i].len()
                    ));
                }
            }
            let total: i32 = o.pte_maps.iter().sum::<i32>() + o.pmd_maps;
            if folio.is_large() {
                if folio.entire_mapcount != o.pmd_maps - 1 {
                    errs.push(format!(
                        "{name}: _entire_mapcount {} but {} PMD mappings",
                        folio.entire_mapcount, o.pmd_maps
                    ));
                }
                if folio.large_mapcount != total - 1 {
                    errs.push(format!(
                        "{name}: _large_mapcount {} but {total} mappings",
                        folio.large_mapcount
                    ));
                }
                let mapped_pages = o.pte_maps.iter().filter(|&&c| c > 0).count() as i32;
                let want = mapped_pages + if o.pmd_maps > 0 { ENTIRELY_MAPPED } else { 0 };
                if folio.nr_pages_mapped != want {
                    errs.push(format!(
                        "{name}: _nr_pages_mapped {:#x} but expected {want:#x}",
                        folio.nr_pages_mapped
                    ));
                }
                if self.profile.mm_id {
                    self.check_mm_id_slots(&name, folio, &o, &mut errs);
                }
            } else if o.pmd_maps > 0 {
                errs.push(format!("{name}: small folio mapped by a PMD"));
            }
            let cache = cache_refs.remove(&id).unwrap_or(0);
            let swapcache = if folio.swapcache.is_some() {
                nr as i32
            } else {
                0
            };
            let want_refs = o.refs + cache + swapcache;
            if folio.refcount != want_refs {
                errs.push(format!(
                    "{name}: refcount {} but {} mappings + {cache} page-cache + {swapcache} swap-cache references",
                    folio.refcount, o.refs
                ));
            }
            if folio.refcount == 0 {
                errs.push(format!("{name}: live with refcount 0"));
            }
            if let Some(entry) = folio.swapcache {
                let swap = self.swap.as_ref();
                for i in 0..nr {
                    let e = SwapEntry(entry.0 + i as u32);
                    if swap.map(|s| s.slot(e).cache) != Some(Some((id, i as u16))) {
                        errs.push(format!(
                            "{name}: in swap cache at slot {} but the slot does not point back",
                            e.0
                        ));
                    }
                }
            }
        }
        for (id, _) in observed {
            errs.push(format!("folio {} is mapped but not live", id.0));
        }

        // Swap slots.
        if let Some(swap) = &self.swap {
            for (entry, slot) in swap.iter_used() {
                let refs = swap_refs.remove(&entry).unwrap_or(0);
                if slot.count != refs {
                    errs.push(format!(
                        "swap slot {}: count {} but {refs} references",
                        entry.0, slot.count
                    ));
                }
                if slot.count == 0 && slot.cache.is_none() {
                    errs.push(format!(
                        "swap slot {}: allocated but unreferenced (leak)",
                        entry.0
                    ));
                }
                if let Some((f, i)) = slot.cache {
                    match self.folios.get(f) {
                        Some(folio) if folio.swapcache == Some(SwapEntry(entry.0 - i as u32)) => {}
                        _ => errs.push(format!(
                            "swap slot {}: caches folio {} which does not point back",
                            entry.0, f.0
                        )),
                    }
                }
            }
            for (pid, addr, entry) in exclusive_swap {
                if swap.is_valid(entry) && swap.slot(entry).count != 1 {
                    errs.push(format!(
                        "pid {pid}: exclusive swap PTE at {addr:#x} but slot count {}",
                        swap.slot(entry).count
                    ));
                }
            }
        }
        for (entry, refs) in swap_refs {
            errs.push(format!("{refs} reference(s) to free swap slot {}", entry.0));
        }

        // Page frames: every live folio has its own, aligned to its size.
        let mut frames: Vec<(u64, u64, FolioId)> = self
            .folios
            .iter()
            .map(|(id, f)| (f.pfn, f.pfn + f.nr_pages() as u64, id))
            .collect();
        frames.sort_unstable();
        for w in frames.windows(2) {
            if w[1].0 < w[0].1 {
                errs.push(format!(
                    "folios {} and {} share page frames ({:#x}..{:#x} and {:#x}..)",
                    w[0].2 .0, w[1].2 .0, w[0].0, w[0].1, w[1].0
                ));
            }
        }
        for (pfn, end, id) in &frames {
            if pfn % (end - pfn) != 0 {
                errs.push(format!(
                    "folio {}: pfn {pfn:#x} not aligned to its size",
                    id.0
                ));
            }
        }

        // MM-IDs are unique.
        let mut ids = BTreeSet::new();
        for (pid, mm) in self.mms.iter() {
            if !ids.insert(mm.mm_id) {
                errs.push(format!("pid {pid}: mm_id {} used twice", mm.mm_id));
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(InvariantViolations(errs))
        }
    }

    /// A mapping must sit where rmap will look for it: in a VMA of the folio's anon_vma or
    /// inode, at the address of the folio's page index.
    fn check_placement(
        &self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        id: FolioId,
        page: usize,
        errs: &mut Vec<String>,
    ) {
        let folio = self.folio(id);
        let ok_owner = match folio.owner {
            FolioOwner::Anon { anon_vma, .. } => vma.anon_vma == Some(anon_vma),
            FolioOwner::PageCache { inode, .. } => vma.inode() == Some(inode),
        };
        if !ok_owner {
            errs.push(format!(
                "pid {pid}: {addr:#x} maps folio {} whose owner {:?} is not this VMA's",
                id.0, folio.owner
            ));
            return;
        }
        if vma.address_of(folio.index() + page as u64) != Some(addr) {
            errs.push(format!("pid {pid}: {addr:#x} maps page {page} of folio {} (index {}), which rmap expects elsewhere", id.0, folio.index()));
        }
    }

    fn check_mm_id_slots(
        &self,
        name: &str,
        folio: &crate::folio::Folio,
        o: &Observed,
        errs: &mut Vec<String>,
    ) {
        for slot in 0..2 {
            let id = folio.mm_id[slot];
            if id == MM_ID_DUMMY {
                if folio.mm_id_mapcount[slot] != -1 {
                    errs.push(format!(
                        "{name}: free MM-ID slot {slot} has mapcount {}",
                        folio.mm_id_mapcount[slot]
                    ));
                }
                continue;
            }
            let maps = o.per_mm.get(&id).copied().unwrap_or(0);
            // A slot may under-count: an MM that mapped pages while both slots were taken
            // and then got a freed slot tracks only its later mappings (the kernel accepts
            // this and leaves the shared bit set). It can never over-count, and while the
            // shared bit is clear it is exact.
            let count = folio.mm_id_mapcount[slot];
            if count > maps - 1 || (!folio.mm_ids_shared && count != maps - 1) {
                errs.push(format!("{name}: MM-ID slot {slot} (mm {id}) mapcount {count} but that MM maps it {maps} times (shared bit {})", folio.mm_ids_shared));
            }
        }
        let mappers: Vec<MmId> = o
            .per_mm
            .iter()
            .filter(|(_, &c)| c > 0)
            .map(|(&m, _)| m)
            .collect();
        if let Some(m) = mappers.iter().find(|m| !folio.mm_id.contains(m)) {
            if !folio.mm_ids_shared {
                errs.push(format!(
                    "{name}: mm {m} maps it without an MM-ID slot but the shared bit is clear"
                ));
            }
        }
        if mappers.len() >= 2 && !folio.mm_ids_shared {
            errs.push(format!(
                "{name}: mapped by {} MMs but the MM-ID shared bit is clear",
                mappers.len()
            ));
        }
        let exact_sole_owner = mappers.len() == 1
            && (0..2).any(|slot| {
                folio.mm_id[slot] == mappers[0]
                    && folio.mm_id_mapcount[slot] == o.per_mm[&mappers[0]] - 1
            });
        if exact_sole_owner && folio.mm_ids_shared {
            errs.push(format!(
                "{name}: only its slot owner maps it but the shared bit is set"
            ));
        }
        if mappers.is_empty() && folio.mm_ids_shared {
            errs.push(format!("{name}: unmapped but the shared bit is set"));
        }
    }

    fn check_vmas(&self, pid: Pid, errs: &mut Vec<String>) {
        let mut prev_end = 0;
        for v in self.mms[&pid].vmas.iter() {
            if v.start >= v.end || v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 {
                errs.push(format!(
                    "pid {pid}: malformed VMA {:#x}-{:#x}",
                    v.start, v.end
                ));
            }
            if v.start < prev_end {
                errs.push(format!(
                    "pid {pid}: VMA {:#x}-{:#x} overlaps its predecessor",
                    v.start, v.end
                ));
            }
            prev_end = v.end;
        }
    }
}

impl Observed {
    fn new(nr: usize) -> Observed {
        Observed {
            pte_maps: vec![0; nr],
            pmd_maps: 0,
            per_mm: BTreeMap::new(),
            page_mms: vec![BTreeSet::new(); nr],
            refs: 0,
        }
    }
}
