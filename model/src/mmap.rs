//! mmap, munmap and process exit (mm/mmap.c, mm/vma.c `do_vmi_munmap`, `free_pgtables`,
//! kernel/exit.c `exit_mmap`).

use crate::errno::Errno;
use crate::filemap::InodeKind;
use crate::kernel::{Kernel, Pid};
use crate::page_table::Pmd;
use crate::vma::{boundary_splits_pmd, VmFlags, Vma, VmaBacking};
use crate::{HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE};

/// Page protection of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
}

impl Prot {
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
    };
    pub const READ: Prot = Prot {
        read: true,
        write: false,
    };
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
    };
}

/// What to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// MAP_PRIVATE | MAP_ANONYMOUS.
    PrivateAnon,
    /// MAP_SHARED of an inode (memfd or a tmpfs/regular file).
    Shared(crate::filemap::InodeId),
    /// MAP_PRIVATE of an inode.
    Private(crate::filemap::InodeId),
}

/// Where the top-down search for a free range starts (an x86_64 mmap_base).
const MMAP_BASE: u64 = 0x7f00_0000_0000;

/// An mmap call built step by step, for callers that would rather not spell out seven
/// positional arguments:
///
/// ```
/// # use model::{Kernel, mmap::Mmap};
/// let mut k = Kernel::default();
/// let pid = k.spawn();
/// let addr = Mmap::anon(2 << 20).at(0x4000_0000).call(&mut k, pid).unwrap();
/// assert_eq!(addr, 0x4000_0000);
/// ```
///
/// Defaults: read-write, private anonymous, offset 0, `addr` a hint (0: the kernel picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmap {
    addr: u64,
    len: u64,
    prot: Prot,
    kind: MapKind,
    offset: u64,
    fixed: bool,
}

impl Mmap {
    /// MAP_PRIVATE | MAP_ANONYMOUS of `len` bytes, read-write.
    pub fn anon(len: u64) -> Mmap {
        Mmap {
            addr: 0,
            len,
            prot: Prot::READ_WRITE,
            kind: MapKind::PrivateAnon,
            offset: 0,
            fixed: false,
        }
    }

    /// MAP_SHARED of `len` bytes of `inode` (a memfd, a tmpfs or a regular file), read-write.
    pub fn shared(inode: crate::filemap::InodeId, len: u64) -> Mmap {
        Mmap {
            kind: MapKind::Shared(inode),
            ..Mmap::anon(len)
        }
    }

    /// MAP_PRIVATE of `len` bytes of `inode`, read-write (copy on write).
    pub fn private(inode: crate::filemap::InodeId, len: u64) -> Mmap {
        Mmap {
            kind: MapKind::Private(inode),
            ..Mmap::anon(len)
        }
    }

    /// The address hint (used when the range is free).
    pub fn at(self, addr: u64) -> Mmap {
        Mmap { addr, ..self }
    }

    /// MAP_FIXED at `addr`: whatever is mapped there goes.
    pub fn fixed(self, addr: u64) -> Mmap {
        Mmap {
            addr,
            fixed: true,
            ..self
        }
    }

    /// The protection (PROT_READ alone: `Prot::READ`).
    pub fn prot(self, prot: Prot) -> Mmap {
        Mmap { prot, ..self }
    }

    /// The file offset in bytes.
    pub fn offset(self, offset: u64) -> Mmap {
        Mmap { offset, ..self }
    }

    /// Performs the mmap in `pid`; returns the address mapped.
    pub fn call(self, k: &mut Kernel, pid: Pid) -> Result<u64, Errno> {
        k.mmap(
            pid,
            self.addr,
            self.len,
            self.prot,
            self.kind,
            self.offset,
            self.fixed,
        )
    }
}

impl Kernel {
    /// `mmap(addr, len, prot, flags, fd, offset)`. Without `fixed`, `addr` is a hint used when
    /// the range is free (as the selftest's mmap at BASE_ADDR); otherwise the highest free range
    /// below the mmap base is taken, 2 MiB aligned for anonymous lengths that are multiples of
    /// 2 MiB. With `fixed`, whatever was mapped there is unmapped first (MAP_FIXED).
    #[allow(clippy::too_many_arguments)] // mirrors the system call's argument list
    pub fn mmap(
        &mut self,
        pid: Pid,
        addr: u64,
        len: u64,
        prot: Prot,
        kind: MapKind,
        offset: u64,
        fixed: bool,
    ) -> Result<u64, Errno> {
        if len == 0 || !addr.is_multiple_of(PAGE_SIZE) || !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let (backing, shared) = match kind {
            MapKind::PrivateAnon => (VmaBacking::Anon, false),
            MapKind::Shared(i) | MapKind::Private(i) => {
                let backing = match self.inodes.get(i.0 as usize).ok_or(Errno::EINVAL)?.kind {
                    InodeKind::Regular => VmaBacking::File(i),
                    InodeKind::Shmem { .. } => VmaBacking::Shmem(i),
                };
                (backing, matches!(kind, MapKind::Shared(_)))
            }
        };
        if shared
            && prot.write
            && matches!(backing, VmaBacking::File(_))
            && !self.inode(backing_inode(backing)).open_for_write
        {
            // A shared writable mapping needs a file opened for writing.
            return Err(Errno::EPERM);
        }
        let start = if fixed {
            self.munmap(pid, addr, len)?;
            addr
        } else if addr != 0
            && !self
                .mm(pid)?
                .vmas
                .overlapping(addr, addr + len)
                .any(|_| true)
        {
            addr
        } else {
            self.get_unmapped_area(
                pid,
                len,
                backing == VmaBacking::Anon && len.is_multiple_of(HPAGE_PMD_SIZE),
            )?
        };
        let mut flags = VmFlags::NONE;
        if prot.read {
            flags |= VmFlags::READ;
        }
        if prot.write {
            flags |= VmFlags::WRITE;
        }
        if shared {
            flags |= VmFlags::SHARED;
            if self.inode(backing_inode(backing)).open_for_write {
                flags |= VmFlags::MAYWRITE;
            }
        } else {
            flags |= VmFlags::MAYWRITE;
        }
        let pgoff = match backing {
            VmaBacking::Anon => start >> PAGE_SHIFT,
            _ => offset >> PAGE_SHIFT,
        };
        let vma = Vma {
            start,
            end: start + len,
            flags,
            backing,
            pgoff,
            anon_vma: None,
        };
        let mm = self.mm_mut(pid)?;
        mm.vmas.insert(vma.clone());
        let merged = mm.vmas.try_merge(start);
        if backing != VmaBacking::Anon
            && merged == start
            && mm.vmas.find(start).is_some_and(|v| v.end == start + len)
        {
            // __mmap_region registers file VMAs that were not merged.
            self.khugepaged_enter_vma(pid, &vma, vma.flags);
        }
        Ok(start)
    }

    /// Highest free, suitably aligned range below the mmap base (`arch_get_unmapped_area_topdown`).
    pub(crate) fn get_unmapped_area(
        &self,
        pid: Pid,
        len: u64,
        thp_align: bool,
    ) -> Result<u64, Errno> {
        let align = if thp_align { HPAGE_PMD_SIZE } else { PAGE_SIZE };
        let mut top = MMAP_BASE;
        let vmas: Vec<(u64, u64)> = self
            .mm(pid)?
            .vmas
            .iter()
            .map(|v| (v.start, v.end))
            .collect();
        for &(start, end) in vmas.iter().rev() {
            if end > top {
                top = top.min(start);
                continue;
            }
            let candidate = (top - len) & !(align - 1);
            if candidate >= end {
                return Ok(candidate);
            }
            top = start;
        }
        let candidate = top.checked_sub(len).ok_or(Errno::ENOMEM)? & !(align - 1);
        if candidate < 0x1_0000 {
            return Err(Errno::ENOMEM);
        }
        Ok(candidate)
    }

    /// Splits the VMA containing `addr` so that one starts there (`split_vma` with
    /// `vma_adjust_trans_huge`: a THP straddling the new boundary has its PMD split).
    pub(crate) fn split_vma_at(&mut self, pid: Pid, addr: u64) {
        let Some(vma) = self.mms[&pid].vmas.find(addr).cloned() else {
            return;
        };
        if vma.start == addr {
            return;
        }
        if boundary_splits_pmd(&vma, addr)
            && matches!(
                self.mms[&pid].page_table.pmd(addr),
                Pmd::Huge(_) | Pmd::HugeZero
            )
        {
            self.split_huge_pmd(pid, addr);
        }
        self.mms.get_mut(&pid).expect("live").vmas.split_at(addr);
    }

    /// `munmap(addr, len)`.
    pub fn munmap(&mut self, pid: Pid, addr: u64, len: u64) -> Result<(), Errno> {
        if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = addr
            .checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .ok_or(Errno::EINVAL)?;
        self.mm(pid)?;
        self.split_vma_at(pid, addr);
        self.split_vma_at(pid, end);
        self.zap_range(pid, addr, end);
        let doomed: Vec<u64> = self.mms[&pid]
            .vmas
            .overlapping(addr, end)
            .map(|v| v.start)
            .collect();
        let mm = self.mms.get_mut(&pid).expect("live");
        for start in doomed {
            mm.vmas.remove(start);
        }
        self.free_pgtables(pid, addr, end);
        Ok(())
    }

    /// `free_pgtables`: frees the page tables of PMD ranges in `[start, end)` that no VMA
    /// touches any more.
    pub(crate) fn free_pgtables(&mut self, pid: Pid, start: u64, end: u64) {
        let mm = self.mms.get_mut(&pid).expect("live");
        let ranges: Vec<u64> = mm.page_table.pmds_in(start, end).map(|(a, _)| a).collect();
        for pmd_start in ranges {
            if mm
                .vmas
                .overlapping(pmd_start, pmd_start + HPAGE_PMD_SIZE)
                .next()
                .is_none()
            {
                let freed = mm.page_table.free_pmd_range(pmd_start);
                if let Pmd::Table(t) = &freed {
                    assert!(
                        t.iter().all(|p| p.is_none()),
                        "model bug: freeing a populated page table"
                    );
                }
            }
        }
    }

    /// Process exit (`exit_mmap`): unmaps everything and frees the MM and its MM-ID.
    pub fn exit(&mut self, pid: Pid) -> Result<(), Errno> {
        let ranges: Vec<(u64, u64)> = self
            .mm(pid)?
            .vmas
            .iter()
            .map(|v| (v.start, v.end))
            .collect();
        for (start, end) in ranges {
            self.munmap(pid, start, end - start)?;
        }
        self.khugepaged_exit(pid);
        let mm = self.mms.remove(&pid).expect("checked above");
        self.free_mm_id(mm.mm_id);
        Ok(())
    }

    /// `prctl(PR_SET_THP_DISABLE, disable, 0)`.
    pub fn set_thp_disable(&mut self, pid: Pid, disable: bool) -> Result<(), Errno> {
        self.mm_mut(pid)?.thp_disabled = disable;
        Ok(())
    }
}

fn backing_inode(backing: VmaBacking) -> crate::filemap::InodeId {
    match backing {
        VmaBacking::Shmem(i) | VmaBacking::File(i) => i,
        VmaBacking::Anon => unreachable!("anonymous mappings have no inode"),
    }
}
