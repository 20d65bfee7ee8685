//! fork (kernel/fork.c `dup_mmap`, mm/memory.c `copy_page_range`, `copy_present_ptes`,
//! `copy_nonpresent_pte`; mm/huge_memory.c `copy_huge_pmd`).

use crate::errno::Errno;
use crate::kernel::{Kernel, Pid};
use crate::mm::Mm;
use crate::page_table::{Pmd, PmdView, Pte};
use crate::rmap;
use crate::{HPAGE_PMD_SIZE, PAGE_SIZE};

impl Kernel {
    /// `fork()`: a child with a copy of the parent's VMAs. Page tables are copied for VMAs with
    /// an anon_vma (the others refault from the page cache): anonymous pages become COW-shared
    /// (write-protected in both, not exclusive any more, old in the child), swap entries gain
    /// a reference. Returns the child's pid.
    pub fn fork(&mut self, parent: Pid) -> Result<Pid, Errno> {
        let parent_mm = self.mm(parent)?.clone_layout();
        let child = self.next_pid();
        let child_mm_id = self.alloc_mm_id();
        let mut mm = Mm::new(child_mm_id);
        mm.vmas = parent_mm.vmas.clone();
        mm.thp_disabled = parent_mm.thp_disabled;
        self.mms.insert(child, mm);
        let tracking = self.profile.mm_id;
        for vma in parent_mm.vmas.iter() {
            if vma.anon_vma.is_none() {
                continue;
            }
            let cow = vma.is_cow_mapping();
            let pmds: Vec<u64> = self.mms[&parent]
                .page_table
                .pmds_in(vma.start, vma.end)
                .map(|(a, _)| a)
                .collect();
            for pmd_start in pmds {
                let lo = vma.start.max(pmd_start);
                let hi = vma.end.min(pmd_start + HPAGE_PMD_SIZE);
                match self.mms[&parent].page_table.pmd_view(pmd_start) {
                    PmdView::None => {}
                    PmdView::HugeZero => {
                        self.mms
                            .get_mut(&child)
                            .expect("child")
                            .page_table
                            .set_pmd(pmd_start, Pmd::HugeZero);
                    }
                    PmdView::Huge(mut h) => {
                        if !self.folio(h.folio).is_anon() {
                            // A file PMD is not copied; the child refaults it.
                            continue;
                        }
                        let f = self.folios.folio_mut(h.folio);
                        rmap::folio_dup_anon_rmap_pmd(f, child_mm_id, tracking);
                        f.refcount += 1;
                        if cow {
                            h.write = false;
                            self.mms
                                .get_mut(&parent)
                                .expect("parent")
                                .page_table
                                .set_pmd(pmd_start, Pmd::Huge(h));
                        }
                        h.young = false;
                        self.mms
                            .get_mut(&child)
                            .expect("child")
                            .page_table
                            .set_pmd(pmd_start, Pmd::Huge(h));
                    }
                    PmdView::Table => {
                        let mut a = lo;
                        while a < hi {
                            self.copy_pte(parent, child, a, cow);
                            a += PAGE_SIZE;
                        }
                    }
                }
            }
        }
        self.khugepaged_fork(parent, child);
        Ok(child)
    }

    /// `copy_present_ptes` / `copy_nonpresent_pte` for one address.
    fn copy_pte(&mut self, parent: Pid, child: Pid, addr: u64, cow: bool) {
        let tracking = self.profile.mm_id;
        let child_mm_id = self.mms[&child].mm_id;
        let pte = self.mms[&parent].page_table.pte(addr);
        let child_pte = match pte {
            Pte::None => return,
            Pte::Zero { .. } => Pte::Zero { young: false },
            Pte::Present(mut p) => {
                let f = self.folios.folio_mut(p.folio);
                if f.is_anon() {
                    rmap::folio_dup_anon_rmap_ptes(f, p.page as usize, 1, child_mm_id, tracking);
                } else {
                    rmap::folio_dup_file_rmap_ptes(f, p.page as usize, 1, child_mm_id, tracking);
                }
                f.refcount += 1;
                if cow && p.write {
                    p.write = false;
                    self.mms
                        .get_mut(&parent)
                        .expect("parent")
                        .page_table
                        .set_pte(addr, Pte::Present(p));
                }
                p.young = false;
                Pte::Present(p)
            }
            Pte::Swap { entry, exclusive } => {
                self.swap_duplicate(entry);
                if exclusive {
                    // The entry is shared from now on, in the parent too.
                    self.mms
                        .get_mut(&parent)
                        .expect("parent")
                        .page_table
                        .set_pte(
                            addr,
                            Pte::Swap {
                                entry,
                                exclusive: false,
                            },
                        );
                }
                Pte::Swap {
                    entry,
                    exclusive: false,
                }
            }
        };
        self.mms
            .get_mut(&child)
            .expect("child")
            .page_table
            .set_pte(addr, child_pte);
    }
}

impl Mm {
    /// A copy of the VMA layout only (page tables are copied entry by entry).
    fn clone_layout(&self) -> Mm {
        let mut mm = Mm::new(self.mm_id);
        mm.vmas = self.vmas.clone();
        mm.thp_disabled = self.thp_disabled;
        mm
    }
}
