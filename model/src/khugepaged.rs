//! khugepaged registration (mm/khugepaged.c `khugepaged_enter_vma`, `__khugepaged_enter`,
//! `hugepage_pmd_enabled`; include/linux/khugepaged.h `khugepaged_fork`, `khugepaged_exit`).

use crate::huge_memory::TvaType;
use crate::kernel::{Kernel, Pid};
use crate::thp_settings::{ThpEnabled, ThpOrderEnabled};
use crate::vma::Vma;
use crate::HPAGE_PMD_ORDER;

impl Kernel {
    /// `hugepage_pmd_enabled`: whether the khugepaged thread runs at all.
    pub fn hugepage_pmd_enabled(&self) -> bool {
        let global_enabled = self.thp.enabled != ThpEnabled::Never;
        if self.read_only_thp_for_fs && global_enabled {
            return true;
        }
        let pmd_anon = match self.thp.anon_orders[HPAGE_PMD_ORDER as usize] {
            ThpOrderEnabled::Always | ThpOrderEnabled::Madvise => true,
            ThpOrderEnabled::Inherit => global_enabled,
            ThpOrderEnabled::Never => false,
        };
        pmd_anon || self.shmem_hpage_pmd_enabled()
    }

    /// `khugepaged_enter_vma`: registers the MM with khugepaged if the VMA could get a PMD THP
    /// from it. The MM joins the tail of the scan list once and stays until it exits.
    pub(crate) fn khugepaged_enter_vma(&mut self, pid: Pid, vma: &Vma) {
        let Some(mm) = self.mms.get(&pid) else { return };
        if mm.khugepaged_registered || !self.hugepage_pmd_enabled() {
            return;
        }
        if !self.thp_vma_allowable_order(pid, vma, TvaType::Khugepaged, HPAGE_PMD_ORDER) {
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

    /// `khugepaged_exit`: the MM leaves the scan list.
    pub(crate) fn khugepaged_exit(&mut self, pid: Pid) {
        self.khugepaged_mm_list.retain(|&p| p != pid);
    }

    /// The MMs on khugepaged's scan list, in scan order.
    pub fn khugepaged_mm_list(&self) -> &[Pid] {
        &self.khugepaged_mm_list
    }
}
