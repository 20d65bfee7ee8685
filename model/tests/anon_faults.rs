//! Anonymous faults: small pages, PMD THPs, mTHPs, the zero page, and their counters.

mod common;
use common::*;
use model::folio::ENTIRELY_MAPPED;
use model::madvise::Advice;
use model::page_table::Pmd;
use model::thp_settings::{ThpEnabled, ThpOrderEnabled};

#[test]
fn small_page_write_fault_makes_exclusive_order0_folio() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, 4 * PMD);
    s.write(p, BASE, 7);
    let f = s.folio(p, BASE);
    assert_eq!(f.order, 0);
    assert_eq!(f.folio_mapcount(), 1);
    assert_eq!(f.refcount, 1);
    assert!(f.pages[0].anon_exclusive);
    assert_eq!(s.read(p, BASE), 7);
    // enabled=madvise and no MADV_HUGEPAGE: no THP.
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 0);
}

#[test]
fn pmd_thp_at_fault_has_kernel_counters() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, 4 * PMD);
    s.thp_at(p, BASE);
    let f = s.folio(p, BASE + 5 * PAGE);
    assert_eq!(f.order, 9);
    assert_eq!(f.folio_entire_mapcount(), 1);
    assert_eq!(f.folio_large_mapcount(), 1);
    assert_eq!(f.nr_pages_mapped, ENTIRELY_MAPPED);
    assert_eq!(f.mm_id, [s.k.mm(p).unwrap().mm_id, 0]);
    assert_eq!(f.mm_id_mapcount, [0, -1]);
    assert!(!f.mm_ids_shared);
    assert!(f.pages[0].anon_exclusive);
    assert!(
        !f.pages[1].anon_exclusive,
        "only the head carries PG_anon_exclusive"
    );
    assert_eq!(f.refcount, 1);
    assert!(
        f.deferred_split,
        "6.12+: queued for the underused shrinker at fault"
    );
    assert_eq!(f.folio_precise_page_mapcount(300), 1);
    s.validate(p, BASE, 0, PMD);
}

#[test]
fn thp_requires_aligned_block_inside_vma() {
    let mut s = Sys::v618();
    let p = s.p;
    // A VMA that starts 4 KiB past a 2 MiB boundary has no aligned block in its first 2 MiB.
    s.mmap_anon(p, BASE + PAGE, 2 * PMD);
    s.madvise(p, BASE + PAGE, 2 * PMD, Advice::HugePage)
        .unwrap();
    s.write(p, BASE + PAGE, 1);
    assert_eq!(s.folio(p, BASE + PAGE).order, 0);
    s.write(p, BASE + PMD, 1);
    assert_eq!(s.folio(p, BASE + PMD).order, 9);
}

#[test]
fn read_faults_map_zero_pages_when_use_zero_page() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, 2 * PMD);
    assert_eq!(s.read(p, BASE + PAGE), 0);
    assert!(
        s.k.folio_at(p, BASE + PAGE).is_none(),
        "zero page is not a folio mapping"
    );
    assert!(s.k.pagemap(p, BASE + PAGE).unwrap().zero_page);
    s.madvise(p, BASE + PMD, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.read(p, BASE + PMD), 0);
    assert!(matches!(
        s.k.mm(p).unwrap().page_table.pmd(BASE + PMD),
        Pmd::HugeZero
    ));
    // Writing replaces the zero pages.
    s.write(p, BASE + PAGE, 5);
    assert_eq!(s.folio(p, BASE + PAGE).order, 0);
    s.write(p, BASE + PMD + PAGE, 6);
    assert_eq!(s.folio(p, BASE + PMD).order, 9);
    assert_eq!(s.read(p, BASE + PMD + PAGE), 6);
    assert_eq!(s.read(p, BASE + PMD), 0);
}

#[test]
fn read_fault_without_zero_page_allocates_writable_dirty_page() {
    let mut s = Sys::v618();
    s.k.thp.use_zero_page = false;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.read(p, BASE);
    let f = s.folio(p, BASE);
    assert_eq!(f.order, 0);
    assert!(f.pages[0].anon_exclusive);
}

#[test]
fn mthp_fault_maps_whole_aligned_block() {
    let mut s = Sys::v618();
    s.k.thp.anon_orders[4] = ThpOrderEnabled::Always;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.write(p, BASE + 3 * PAGE, 1);
    let (id, page) = s.folio_at(p, BASE + 3 * PAGE);
    assert_eq!(page, 3);
    let f = s.k.folio(id);
    assert_eq!(f.order, 4);
    assert_eq!(f.folio_large_mapcount(), 16);
    assert_eq!(f.folio_nr_pages_mapped(), 16);
    assert!(f.pages.iter().all(|pg| pg.anon_exclusive));
    assert!(!f.deferred_split, "mTHPs are not queued at fault");
    for i in 0..16 {
        assert_eq!(s.k.folio_at(p, BASE + i * PAGE).unwrap(), (id, i as usize));
    }
    // A block that already has a populated PTE falls back to order 0 (orders 2, 3 are off).
    s.k.thp.anon_orders[4] = ThpOrderEnabled::Never;
    s.write(p, BASE + 37 * PAGE, 1);
    s.k.thp.anon_orders[4] = ThpOrderEnabled::Always;
    s.write(p, BASE + 32 * PAGE, 1);
    assert_eq!(s.folio(p, BASE + 32 * PAGE).order, 0);
    s.write(p, BASE + 48 * PAGE, 1);
    assert_eq!(s.folio(p, BASE + 48 * PAGE).order, 4);
}

#[test]
fn enabled_always_gives_thp_without_madvise_and_never_gives_none() {
    let mut s = Sys::v618();
    s.k.thp.enabled = ThpEnabled::Always;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.write(p, BASE, 1);
    assert_eq!(s.folio(p, BASE).order, 9);
    let mut s = Sys::v618();
    s.k.thp.enabled = ThpEnabled::Never;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
    s.write(p, BASE, 1);
    assert_eq!(s.folio(p, BASE).order, 0);
}

#[test]
fn nohugepage_and_prctl_disable_thp_at_fault() {
    let mut s = Sys::v618();
    s.k.thp.enabled = ThpEnabled::Always;
    let p = s.p;
    s.mmap_anon(p, BASE, 2 * PMD);
    s.madvise(p, BASE, PMD, Advice::NoHugePage).unwrap();
    s.write(p, BASE, 1);
    assert_eq!(s.folio(p, BASE).order, 0);
    s.step("prctl", |k| k.set_thp_disable(p, true)).unwrap();
    s.write(p, BASE + PMD, 1);
    assert_eq!(s.folio(p, BASE + PMD).order, 0);
}

#[test]
fn faults_outside_vmas_or_without_permission_are_efault() {
    let mut s = Sys::v618();
    let p = s.p;
    assert_eq!(s.k.write(p, BASE, 1), Err(model::Errno::EFAULT));
    s.step("mmap ro", |k| {
        k.mmap(
            p,
            BASE,
            PMD,
            model::mmap::Prot::READ,
            model::mmap::MapKind::PrivateAnon,
            0,
            false,
        )
    })
    .unwrap();
    assert_eq!(s.k.write(p, BASE, 1), Err(model::Errno::EFAULT));
    assert_eq!(s.read(p, BASE), 0);
}

#[test]
fn write_pages_matches_a_loop_of_writes() {
    // The batched store used by fill_memory must leave exactly the state single stores do.
    let build = |batched: bool| {
        let mut s = Sys::v618();
        let p = s.p;
        s.mmap_anon(p, BASE, 3 * PMD);
        s.madvise(p, BASE + PMD, PMD, Advice::HugePage).unwrap();
        let n = 3 * 512 - 7;
        if batched {
            s.step("write_pages", |k| {
                k.write_pages(p, BASE + PAGE, n, |i| i * 3)
            })
            .unwrap();
        } else {
            for i in 0..n {
                s.write(p, BASE + PAGE + i * PAGE, i * 3);
            }
        }
        let map: Vec<_> = (0..3 * 512)
            .map(|i| s.k.pagemap(p, BASE + i * PAGE).unwrap())
            .collect();
        let data: Vec<u64> = (0..3 * 512).map(|i| s.read(p, BASE + i * PAGE)).collect();
        (map, data, s.k.smaps(p, BASE).unwrap())
    };
    assert_eq!(build(true), build(false));
}

#[test]
fn no_mthp_sizes_before_6_8_even_if_the_order_array_says_so() {
    // The per-size files do not exist before 6.8; even a model whose array was set directly
    // faults order-0 pages, as those kernels do.
    for (release, order) in [("6.7", 0), ("6.8", 2)] {
        let mut s = Sys::new(model::KernelProfile::for_release(release).unwrap());
        s.k.thp.anon_orders[2] = model::thp_settings::ThpOrderEnabled::Always;
        let p = s.p;
        s.mmap_anon(p, BASE, PMD);
        s.write(p, BASE, 1);
        assert_eq!(s.folio(p, BASE).order, order, "{release}");
    }
}
