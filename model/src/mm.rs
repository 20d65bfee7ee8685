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

/// The live MMs, indexed by pid (pids are small and handed out in order, so a vector slot
/// per pid makes the per-access lookup an index).
#[derive(Clone, Debug, Default)]
pub struct MmTable {
    slots: Vec<Option<Mm>>,
}

impl MmTable {
    pub fn get(&self, pid: &u32) -> Option<&Mm> {
        self.slots.get(*pid as usize).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, pid: &u32) -> Option<&mut Mm> {
        self.slots.get_mut(*pid as usize).and_then(|s| s.as_mut())
    }

    pub fn contains_key(&self, pid: &u32) -> bool {
        self.get(pid).is_some()
    }

    pub fn insert(&mut self, pid: u32, mm: Mm) {
        let i = pid as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(mm);
    }

    pub fn remove(&mut self, pid: &u32) -> Option<Mm> {
        self.slots.get_mut(*pid as usize).and_then(|s| s.take())
    }

    /// Live (pid, MM) pairs in pid order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Mm)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|m| (i as u32, m)))
    }

    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().map(|(p, _)| p)
    }
}

impl std::ops::Index<&u32> for MmTable {
    type Output = Mm;
    fn index(&self, pid: &u32) -> &Mm {
        self.get(pid)
            .unwrap_or_else(|| panic!("model bug: pid {pid} has no MM"))
    }
}
