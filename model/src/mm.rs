//! An address space (`struct mm_struct`): its VMAs, page tables, MM-ID and the flags the model
//! uses.

use crate::mm_id::MmId;
use crate::page_table::PageTable;
use crate::vma::VmaTree;

/// One process's address space.
#[derive(Clone, Debug)]
pub struct Mm {
    /// `mm->mm_id`, the owner id used in large folios' MM-ID slots.
    pub mm_id: MmId,
    pub vmas: VmaTree,
    pub page_table: PageTable,
    /// MMF_VM_HUGEPAGE: registered with khugepaged.
    pub khugepaged_registered: bool,
    /// MMF_DISABLE_THP_COMPLETELY (`prctl(PR_SET_THP_DISABLE, 1, 0)`).
    pub thp_disabled: bool,
}

impl Mm {
    pub fn new(mm_id: MmId) -> Mm {
        Mm {
            mm_id,
            vmas: VmaTree::default(),
            page_table: PageTable::default(),
            khugepaged_registered: false,
            thp_disabled: false,
        }
    }
}
