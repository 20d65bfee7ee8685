//! mm/huge_memory.c behaviours the mutation run (ci/mutants.sh) found unpinned: THP eligibility
//! (`__thp_vma_allowable_orders`) and PMD faults. Each test names the kernel function it mirrors
//! and fails when the model's rule for it is bent.

mod common;
use common::*;
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};

/// `__thp_vma_allowable_orders` masks the asked orders with THP_ORDERS_ALL_FILE_DEFAULT, which
/// has no order 0, then keeps the orders that fit the VMA: a regular-file VMA of one page has
/// none left, so smaps says THPeligible 0, while the same file mapped over 2 MiB is eligible.
#[test]
fn a_one_page_file_vma_is_not_thp_eligible() {
    let mut s = Sys::v618();
    s.k.read_only_thp_for_fs = true;
    s.k.sysfs_write("enabled", "madvise").unwrap();
    let contents: Vec<u64> = (0..512).collect();
    let ino = s.step("create", |k| k.create_file(&contents));
    let pid = s.p;
    for (addr, len) in [(BASE, PMD), (BASE + 4 * PMD, PAGE)] {
        s.step("mmap", |k| {
            k.mmap(pid, addr, len, Prot::READ, MapKind::Private(ino), 0, false)
        })
        .unwrap();
        s.madvise(pid, addr, len, Advice::HugePage).unwrap();
    }
    assert!(s.k.smaps(pid, BASE).unwrap().thp_eligible);
    assert!(!s.k.smaps(pid, BASE + 4 * PMD).unwrap().thp_eligible);
}

/// The same fit test for anonymous memory (`thp_vma_suitable_order` on the VMA's end, for
/// every caller but the fault path): under enabled=madvise a MADV_HUGEPAGE anonymous VMA is
/// THP-eligible over 2 MiB and not over one page, which no PMD (nor, with the default
/// per-size settings, any smaller THP) fits in.
#[test]
fn a_one_page_anon_vma_is_not_thp_eligible() {
    let mut s = Sys::v618();
    s.k.sysfs_write("enabled", "madvise").unwrap();
    let pid = s.p;
    for (addr, len) in [(BASE, PMD), (BASE + 4 * PMD, PAGE)] {
        s.mmap_anon(pid, addr, len);
        s.madvise(pid, addr, len, Advice::HugePage).unwrap();
        s.write(pid, addr, 1);
    }
    assert!(s.k.smaps(pid, BASE).unwrap().thp_eligible);
    assert!(!s.k.smaps(pid, BASE + 4 * PMD).unwrap().thp_eligible);
}

/// Length alone does not make a VMA eligible: `thp_vma_suitable_order` wants the aligned
/// 2 MiB block below the VMA's end inside the VMA. A 2 MiB anonymous VMA starting one page past
/// a 2 MiB boundary holds no aligned block: THPeligible 0, and 1 for the aligned one.
#[test]
fn a_2m_anon_vma_without_an_aligned_block_is_not_thp_eligible() {
    let mut s = Sys::v618();
    s.k.sysfs_write("enabled", "madvise").unwrap();
    let pid = s.p;
    for addr in [BASE, BASE + 4 * PMD + PAGE] {
        assert_eq!(s.mmap_anon(pid, addr, PMD), addr);
        s.madvise(pid, addr, PMD, Advice::HugePage).unwrap();
    }
    assert!(s.k.smaps(pid, BASE).unwrap().thp_eligible);
    assert!(!s.k.smaps(pid, BASE + 4 * PMD + PAGE).unwrap().thp_eligible);
}

/// For a file VMA outside MADV_COLLAPSE, `__thp_vma_allowable_orders` follows the global
/// `enabled` setting: never refuses even under MADV_HUGEPAGE, madvise needs VM_HUGEPAGE,
/// always needs nothing (then `file_thp_enabled`: a read-only regular file with
/// CONFIG_READ_ONLY_THP_FOR_FS). smaps' THPeligible shows it.
#[test]
fn file_vma_eligibility_follows_the_global_enabled_setting() {
    let mut s = Sys::v618();
    s.k.read_only_thp_for_fs = true;
    let contents: Vec<u64> = (0..1024).collect();
    let ino = s.step("create", |k| k.create_file(&contents));
    let pid = s.p;
    let (advised, plain) = (BASE, BASE + 4 * PMD);
    for addr in [advised, plain] {
        s.step("mmap", |k| {
            k.mmap(pid, addr, PMD, Prot::READ, MapKind::Private(ino), 0, false)
        })
        .unwrap();
    }
    s.madvise(pid, advised, PMD, Advice::HugePage).unwrap();
    for (enabled, want_advised, want_plain) in [
        ("never", false, false),
        ("madvise", true, false),
        ("always", true, true),
    ] {
        s.k.sysfs_write("enabled", enabled).unwrap();
        let got = (
            s.k.smaps(pid, advised).unwrap().thp_eligible,
            s.k.smaps(pid, plain).unwrap().thp_eligible,
        );
        assert_eq!(got, (want_advised, want_plain), "enabled={enabled}");
    }
}

/// `do_huge_pmd_anonymous_page`: a read fault maps the huge zero page only while
/// use_zero_page is set, and otherwise allocates a THP as a write fault does. THP_FAULT_ALLOC
/// counts every THP allocated at fault, the one that replaces the huge zero page on the first
/// write (`do_huge_zero_wp_pmd`) included, and so does the PMD size's own
/// `hugepages-2048kB/stats/anon_fault_alloc` (on this 6.18 host: +1 for a write fault, +0 for
/// the read fault that maps the huge zero page, +1 for the write to it).
#[test]
fn huge_read_faults_follow_use_zero_page_and_thp_fault_alloc_counts() {
    const PMD_ORDER: usize = model::HPAGE_PMD_ORDER as usize;
    let mut s = Sys::v618();
    let pid = s.p;
    s.mmap_anon(pid, BASE, 2 * PMD);
    s.madvise(pid, BASE, 2 * PMD, Advice::HugePage).unwrap();
    s.k.sysfs_write("use_zero_page", "1").unwrap();
    assert_eq!(s.read(pid, BASE), 0);
    assert!(s.k.pagemap(pid, BASE).unwrap().zero_page);
    assert_eq!(s.k.vmstat.thp_fault_alloc, 0);
    assert_eq!(s.k.vmstat.anon_fault_alloc[PMD_ORDER], 0);
    s.write(pid, BASE + PAGE, 3);
    assert_eq!(s.folio(pid, BASE).order, 9);
    assert_eq!(s.k.vmstat.thp_fault_alloc, 1);
    assert_eq!(s.k.vmstat.anon_fault_alloc[PMD_ORDER], 1);
    s.k.sysfs_write("use_zero_page", "0").unwrap();
    assert_eq!(s.read(pid, BASE + PMD), 0);
    assert!(!s.k.pagemap(pid, BASE + PMD).unwrap().zero_page);
    assert_eq!(s.folio(pid, BASE + PMD).order, 9);
    assert_eq!(s.k.vmstat.thp_fault_alloc, 2);
    assert_eq!(s.k.vmstat.anon_fault_alloc[PMD_ORDER], 2);
    assert_eq!(s.read(pid, BASE + PAGE), 3);
}

/// `do_huge_pmd_wp_page`: once the child that shared a THP has exited, a write fault of the
/// parent reuses the THP in place (same folio, still PMD-mapped, one reuse and no copy) and
/// makes the PMD young (`pmd_mkyoung`) even where MADV_COLD had aged it. Split afterwards, its
/// 511 remaining PTEs are young, so khugepaged's scan finds referenced pages and collapses.
/// The write comes from MADV_POPULATE_WRITE, whose fault is not followed by an access.
#[test]
fn a_reused_thp_is_mapped_young_in_place() {
    use model::khugepaged::CollapseContext;
    use model::scan_result::ScanResult;
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.step("exit", |k| k.exit(b)).unwrap();
    s.madvise(a, BASE, PMD, Advice::Cold).unwrap();
    let (copies, reuses) = (s.k.vmstat.cow_copies, s.k.vmstat.cow_reuses);
    s.madvise(a, BASE, PAGE, Advice::PopulateWrite).unwrap();
    assert_eq!(s.k.smaps(a, BASE).unwrap().anon_huge_pages, 2048);
    assert_eq!(s.folio_at(a, BASE).0, id);
    assert_eq!(
        (s.k.vmstat.cow_copies, s.k.vmstat.cow_reuses),
        (copies, reuses + 1)
    );
    // Split the PMD by zapping one page; the other 511 PTEs inherit the PMD's young bit.
    s.madvise(a, BASE + PAGE, PAGE, Advice::DontNeed).unwrap();
    let r = s.step("scan", |k| {
        k.hpage_collapse_scan_pmd(a, BASE, CollapseContext::Khugepaged)
    });
    assert_eq!(r, ScanResult::Succeed);
}

/// `do_set_pmd` maps a page-cache THP writable only in a shared writable mapping: read-faulted
/// into a private writable mapping it is mapped read-only, so a later write copies (COW)
/// instead of writing into the file's page cache.
#[test]
fn a_page_cache_thp_in_a_private_mapping_is_mapped_read_only() {
    let mut s = Sys::v618();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    let a = s.p;
    let fd = s.k.memfd_create();
    s.k.ftruncate(fd, PMD).unwrap();
    let (shared, private) = (BASE, BASE + 4 * PMD);
    s.step("mmap shared", |k| {
        k.mmap(
            a,
            shared,
            PMD,
            Prot::READ_WRITE,
            MapKind::Shared(fd),
            0,
            true,
        )
    })
    .unwrap();
    s.madvise(a, shared, PMD, Advice::HugePage).unwrap();
    s.fill(a, shared, 0, PMD);
    s.step("mmap private", |k| {
        k.mmap(
            a,
            private,
            PMD,
            Prot::READ_WRITE,
            MapKind::Private(fd),
            0,
            true,
        )
    })
    .unwrap();
    s.madvise(a, private, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.read(a, private + PAGE), 1 + 0xdead_0000);
    assert_eq!(s.k.smaps(a, private).unwrap().shmem_pmd_mapped, 2048);
    s.write(a, private + PAGE, 99);
    assert_eq!(s.read(a, private + PAGE), 99);
    assert_eq!(
        s.read(a, shared + PAGE),
        1 + 0xdead_0000,
        "the file is unchanged"
    );
}

/// The rmap walk behind a folio split (`rmap_walk_anon`, `page_vma_mapped_walk`) visits only the
/// page-table entries that map that folio. After fork, the child copies the shared THP into a
/// THP of its own (COW of one page, then MADV_COLLAPSE) at the same address, in a VMA of the
/// same anon_vma. The parent then splits the old THP (MADV_COLD over part of it): the child's
/// PMD maps another folio and stays huge.
#[test]
fn splitting_a_thp_leaves_another_folio_at_the_same_address_alone() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (old, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.write(b, BASE, 7);
    s.step("MADV_COLLAPSE", |k| k.madvise_collapse(b, BASE, PMD))
        .unwrap();
    let (new, _) = s.folio_at(b, BASE);
    assert_ne!(new, old);
    assert_eq!(s.k.smaps(b, BASE).unwrap().anon_huge_pages, 2048);
    s.madvise(a, BASE, PAGE, Advice::Cold).unwrap();
    assert_eq!(s.k.smaps(a, BASE).unwrap().anon_huge_pages, 0, "split");
    assert_eq!(s.k.smaps(b, BASE).unwrap().anon_huge_pages, 2048);
    assert_eq!(s.folio_at(b, BASE).0, new);
    assert_eq!(s.read(b, BASE), 7);
}

/// Splitting a page-cache THP (`__folio_split`) unmaps its pages and, unlike an anonymous
/// folio's, does not map them again (`remap_page` returns early for file folios): they refault
/// from the page cache as small folios. A shmem THP left PTE-mapped by a misaligned mapping
/// only, split by MADV_COLD over part of it, leaves that mapping's pages not present.
#[test]
fn a_split_page_cache_thp_is_left_unmapped() {
    let mut s = Sys::v618();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    let a = s.p;
    let fd = s.k.memfd_create();
    s.k.ftruncate(fd, 2 * PMD).unwrap();
    let (aligned, misaligned) = (BASE, BASE + 4 * PMD + PAGE);
    s.step("mmap aligned", |k| {
        k.mmap(
            a,
            aligned,
            PMD,
            Prot::READ_WRITE,
            MapKind::Shared(fd),
            0,
            true,
        )
    })
    .unwrap();
    s.madvise(a, aligned, PMD, Advice::HugePage).unwrap();
    s.fill(a, aligned, 0, PMD);
    let (thp, _) = s.folio_at(a, aligned);
    assert_eq!(s.k.folio(thp).order, 9);
    s.step("mmap misaligned", |k| {
        k.mmap(
            a,
            misaligned,
            PMD,
            Prot::READ_WRITE,
            MapKind::Shared(fd),
            0,
            true,
        )
    })
    .unwrap();
    for i in 0..4 {
        assert_eq!(s.read(a, misaligned + i * PAGE), i + 0xdead_0000);
    }
    assert_eq!(s.folio_at(a, misaligned).0, thp, "PTE-mapped THP");
    s.step("munmap aligned", |k| k.munmap(a, aligned, PMD))
        .unwrap();
    s.madvise(a, misaligned, PAGE, Advice::Cold).unwrap();
    assert!(s.k.folios.get(thp).is_none_or(|f| !f.is_large()), "split");
    for i in 0..4 {
        assert!(!s.k.pagemap(a, misaligned + i * PAGE).unwrap().present);
    }
    assert_eq!(s.read(a, misaligned + 2 * PAGE), 2 + 0xdead_0000);
}
