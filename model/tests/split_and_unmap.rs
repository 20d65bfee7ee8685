//! Partial unmaps, VMA splits and merges, mremap: how PMD mappings get split and folios end
//! up partially mapped.

mod common;
use common::*;
use model::madvise::Advice;
use model::mremap::MremapFlags;
use model::page_table::Pmd;
use model::thp_settings::ThpEnabled;

#[test]
fn alloc_at_fault_then_dontneed_first_page_splits_pmd() {
    // The selftest's alloc_at_fault.
    let mut s = Sys::v618();
    s.k.thp.enabled = ThpEnabled::Always;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.write(p, BASE, 1);
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 2048);
    let (id, _) = s.folio_at(p, BASE);
    s.madvise(p, BASE, PAGE, Advice::DontNeed).unwrap();
    let sm = s.k.smaps(p, BASE).unwrap();
    assert_eq!(sm.anon_huge_pages, 0);
    assert_eq!(sm.rss, 2048 - 4);
    let f = s.k.folio(id);
    assert_eq!(f.folio_nr_pages_mapped(), 511);
    assert!(f.partially_mapped && f.deferred_split);
    assert_eq!(f.refcount, 511);
    assert!(
        f.pages[1..].iter().all(|pg| pg.anon_exclusive),
        "head AE copied to the PTEs"
    );
    assert_eq!(s.k.vmstat.thp_split_pmd, 1);
}

#[test]
fn dontneed_of_whole_pmd_frees_the_thp() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    s.madvise(p, BASE, PMD, Advice::DontNeed).unwrap();
    assert!(s.k.folios.is_empty());
    assert_eq!(s.k.vmstat.thp_split_pmd, 0);
    assert_eq!(s.read(p, BASE), 0, "refaults as zero page");
}

#[test]
fn nohugepage_subrange_splits_vma_and_pmd_merge_does_not_rebuild_it() {
    // The selftest's collapse_full_of_compound construction.
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    let (id, _) = s.folio_at(p, BASE);
    s.madvise(p, BASE, PAGE, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.mm(p).unwrap().vmas.len(), 2);
    assert!(matches!(
        s.k.mm(p).unwrap().page_table.pmd(BASE),
        Pmd::Table(_)
    ));
    s.madvise(p, BASE, PMD, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.mm(p).unwrap().vmas.len(), 1, "merged back");
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 0);
    let f = s.k.folio(id);
    assert_eq!(f.folio_mapcount(), 512);
    assert_eq!(f.folio_entire_mapcount(), 0);
    assert!(!f.partially_mapped);
    s.validate(p, BASE, 0, PMD);
}

#[test]
fn nohugepage_on_whole_aligned_thp_only_sets_the_flag() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    s.madvise(p, BASE, PMD, Advice::NoHugePage).unwrap();
    let sm = s.k.smaps(p, BASE).unwrap();
    assert_eq!(sm.anon_huge_pages, 2048);
    assert!(!sm.thp_eligible, "THPeligible 0 beside AnonHugePages 2048");
}

#[test]
fn single_pte_entry_compound_leaves_one_page_of_the_thp() {
    // The selftest's collapse_single_pte_entry_compound construction.
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    let (id, _) = s.folio_at(p, BASE);
    s.madvise(p, BASE, PMD, Advice::NoHugePage).unwrap();
    s.madvise(p, BASE + PAGE, PMD - PAGE, Advice::DontNeed)
        .unwrap();
    let f = s.k.folio(id);
    assert_eq!(f.folio_mapcount(), 1);
    assert_eq!(f.refcount, 1);
    assert!(f.partially_mapped);
    s.validate(p, BASE, 0, PAGE);
}

#[test]
fn munmap_partial_thp_and_page_table_freeing() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, 2 * PMD);
    s.thp_at(p, BASE);
    s.step("munmap", |k| k.munmap(p, BASE + PMD / 2, PMD))
        .unwrap();
    assert_eq!(s.k.mm(p).unwrap().vmas.len(), 2);
    assert_eq!(s.folio(p, BASE).folio_nr_pages_mapped(), 256);
    s.step("munmap", |k| k.munmap(p, BASE, 2 * PMD)).unwrap();
    assert!(s.k.folios.is_empty());
    assert_eq!(
        s.k.mm(p).unwrap().page_table.populated_pmds(),
        0,
        "tables freed"
    );
}

#[test]
fn mremap_moves_whole_pmds_and_splits_partial_ones() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    let dest = BASE + 8 * PMD;
    let r = s.step("mremap", |k| {
        k.mremap(p, BASE, PMD, PMD, MremapFlags::MAYMOVE_FIXED, dest)
    });
    assert_eq!(r, Ok(dest));
    assert_eq!(
        s.k.smaps(p, dest).unwrap().anon_huge_pages,
        2048,
        "moved as a PMD"
    );
    s.validate(p, dest, 0, PMD);
    // Moving half of it to an unaligned place splits the PMD.
    let dest2 = BASE + 16 * PMD + PAGE;
    s.step("mremap", |k| {
        k.mremap(p, dest, PMD / 2, PMD / 2, MremapFlags::MAYMOVE_FIXED, dest2)
    })
    .unwrap();
    assert_eq!(s.k.vmstat.thp_split_pmd, 1);
    s.validate(p, dest2, 0, PMD / 2);
    for i in 0..256 {
        assert_eq!(s.read(p, dest + PMD / 2 + i * PAGE), 256 + i + 0xdead_0000);
    }
}

#[test]
fn mremap_errors() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    let e = s.k.mremap(
        p,
        BASE,
        PMD,
        PMD,
        MremapFlags {
            maymove: false,
            fixed: true,
        },
        BASE + PMD,
    );
    assert_eq!(e, Err(model::Errno::EINVAL));
    let e = s.k.mremap(
        p,
        BASE,
        PMD,
        PMD,
        MremapFlags::MAYMOVE_FIXED,
        BASE + PMD / 2,
    );
    assert_eq!(e, Err(model::Errno::EINVAL), "overlapping ranges");
    let e = s.k.mremap(
        p,
        BASE + 4 * PMD,
        PAGE,
        PAGE,
        MremapFlags::MAYMOVE_FIXED,
        BASE + 8 * PMD,
    );
    assert_eq!(e, Err(model::Errno::EFAULT), "nothing mapped at the source");
}

#[test]
fn collapse_compound_extreme_construction() {
    // The selftest's loop: 512 THPs, each reduced to one PTE-mapped page by two mremaps.
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    for i in 0..512u64 {
        s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
        // Fill without a check per page: 512 x 512 full checks would take minutes.
        for j in 0..512 {
            s.k.write(p, BASE + j * PAGE, j + 0xdead_0000).unwrap();
        }
        assert_eq!(
            s.k.smaps(p, BASE).unwrap().anon_huge_pages,
            2048,
            "iteration {i}"
        );
        s.madvise(p, BASE, PMD, Advice::NoHugePage).unwrap();
        let flags = MremapFlags::MAYMOVE_FIXED;
        let r = s.step("mremap+unmap", |k| {
            k.mremap(
                p,
                BASE - i * PAGE,
                i * PAGE + PMD,
                (i + 1) * PAGE,
                flags,
                BASE + 2 * PMD,
            )
        });
        assert_eq!(r, Ok(BASE + 2 * PMD));
        let r = s.step("mremap+alloc", |k| {
            k.mremap(
                p,
                BASE + 2 * PMD,
                (i + 1) * PAGE,
                (i + 1) * PAGE + PMD,
                flags,
                BASE - (i + 1) * PAGE,
            )
        });
        assert_eq!(r, Ok(BASE - (i + 1) * PAGE));
    }
    assert_eq!(
        s.k.mm(p).unwrap().vmas.len(),
        1,
        "{:?}",
        s.k.mm(p)
            .unwrap()
            .vmas
            .iter()
            .map(|v| (v.start, v.end))
            .collect::<Vec<_>>()
            .len()
    );
    // The selftest then unmaps [BASE, BASE + 2M): what is left is [BASE - 2M, BASE).
    s.step("munmap", |k| k.munmap(p, BASE, PMD)).unwrap();
    let area = BASE - PMD;
    let vma = s.k.vma(p, area).unwrap().clone();
    assert_eq!((vma.start, vma.end), (area, BASE));
    let mut folios = std::collections::BTreeSet::new();
    for j in 0..512 {
        let (id, page) = s.folio_at(p, area + j * PAGE);
        let f = s.k.folio(id);
        assert_eq!((f.order, page, f.folio_mapcount()), (9, 0, 1), "page {j}");
        folios.insert(id);
    }
    assert_eq!(folios.len(), 512, "every PTE maps a different THP");
    // Every page kept the contents of page 0 of its THP.
    for j in 0..512 {
        assert_eq!(s.read(p, area + j * PAGE), 0xdead_0000);
    }
}
