//! MADV_PAGEOUT and swap-in, shmem (memfd) and read-only file mappings with their page cache.

mod common;
use common::*;
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::page_table::{Pmd, Pte};
use model::thp_settings::{ShmemEnabled, ThpOrderEnabled};

#[test]
fn pageout_swaps_out_and_fault_swaps_in_with_contents() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, PMD);
    s.madvise(p, BASE, 65 * PAGE, Advice::PageOut).unwrap();
    let sm = s.k.smaps(p, BASE).unwrap();
    assert_eq!(sm.swap, 65 * 4);
    assert_eq!(sm.rss, (512 - 65) * 4);
    assert_eq!(s.k.vmstat.pswpout, 65);
    s.validate(p, BASE, 0, PMD);
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 0);
    // A read fault swap-in maps the exclusive page writable again.
    let Pte::Present(pte) = s.k.mm(p).unwrap().page_table.pte(BASE) else {
        panic!()
    };
    assert!(pte.write);
}

#[test]
fn pageout_without_swap_keeps_pages_but_ages_them() {
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, 4 * PAGE);
    s.madvise(p, BASE, 4 * PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 0);
    let Pte::Present(pte) = s.k.mm(p).unwrap().page_table.pte(BASE) else {
        panic!()
    };
    assert!(!pte.young, "MADV_PAGEOUT clears the accessed bit");
}

#[test]
fn pageout_skips_pages_mapped_by_two_processes() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, 2 * PAGE);
    let _child = s.fork(p);
    s.madvise(p, BASE, 2 * PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 0);
}

#[test]
fn pageout_of_whole_thp_swaps_it_as_a_unit_and_partial_splits_it() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(8192)).unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, 2 * PMD);
    s.thp_at(p, BASE);
    s.madvise(p, BASE, PMD, Advice::PageOut).unwrap();
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 2048);
    assert_eq!(s.k.vmstat.thp_swpout, 1);
    assert!(s.k.folios.is_empty());
    s.validate(p, BASE, 0, PMD);
    // Partial pageout of a THP splits the folio first.
    s.thp_at(p, BASE + PMD);
    s.madvise(p, BASE + PMD, PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.vmstat.thp_split_page, 1);
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 4);
    assert_eq!(s.folio(p, BASE + PMD + PAGE).order, 0);
    s.validate(p, BASE + PMD, 0, PMD);
}

#[test]
fn pageout_splits_partly_covered_mthp() {
    // collapse_swapin_single_pte with -s 2: the mTHP holding page 0 is split first.
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    s.k.thp.anon_orders[2] = ThpOrderEnabled::Always;
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, PMD);
    assert_eq!(s.folio(p, BASE).order, 2);
    s.madvise(p, BASE, PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 4);
    assert_eq!(s.folio(p, BASE + PAGE).order, 0);
    assert_eq!(s.folio(p, BASE + 4 * PAGE).order, 2);
}

#[test]
fn memfd_shared_mapping_gets_pmd_thp_under_advise() {
    let mut s = Sys::v618();
    s.k.thp.shmem_enabled = ShmemEnabled::Advise;
    let p = s.p;
    let (fd, a) = s.memfd_shared(p, BASE, 2 * PMD);
    // No MADV_HUGEPAGE: small pages.
    s.fill(p, a, 0, PMD);
    assert_eq!(s.folio(p, a).order, 0);
    s.madvise(p, a + PMD, PMD, Advice::HugePage).unwrap();
    s.fill(p, a, PMD, 2 * PMD);
    let sm = s.k.smaps(p, a + PMD).unwrap();
    assert_eq!(sm.shmem_pmd_mapped, 2048);
    assert_eq!(
        s.folio(p, a + PMD).refcount,
        512 + 1,
        "page cache + one PMD"
    );
    // A second mapping of the same file sees the same pages.
    let b = s.mmap_file(p, BASE + 8 * PMD, 2 * PMD, MapKind::Shared(fd));
    s.validate(p, b, 0, 2 * PMD);
    // MADV_DONTNEED does not evict shmem pages.
    s.madvise(p, a, 2 * PMD, Advice::DontNeed).unwrap();
    assert!(matches!(
        s.k.mm(p).unwrap().page_table.pmd(a + PMD),
        Pmd::None
    ));
    s.validate(p, a, 0, 2 * PMD);
    // fork does not copy shared mappings: the child faults them in.
    let c = s.fork(p);
    assert!(s.k.folio_at(c, a).is_none());
    s.validate(c, a, 0, PAGE);
}

#[test]
fn shmem_dontneed_inside_pmd_clears_the_whole_pmd() {
    let mut s = Sys::v618();
    s.k.thp.shmem_enabled = ShmemEnabled::Always;
    let p = s.p;
    let (_, a) = s.memfd_shared(p, BASE, PMD);
    s.fill(p, a, 0, PMD);
    s.madvise(p, a, PAGE, Advice::DontNeed).unwrap();
    assert_eq!(
        s.k.smaps(p, a).unwrap().rss,
        0,
        "a shmem PMD split just clears it"
    );
    s.validate(p, a, 0, PMD);
}

#[test]
fn shmem_pageout_goes_to_swap_and_back() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(1024)).unwrap();
    let p = s.p;
    let (_, a) = s.memfd_shared(p, BASE, 16 * PAGE);
    s.fill(p, a, 0, 16 * PAGE);
    s.madvise(p, a, 4 * PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.swap_device().unwrap().in_use(), 4);
    assert_eq!(s.k.smaps(p, a).unwrap().rss, 12 * 4);
    s.validate(p, a, 0, 16 * PAGE);
    assert_eq!(s.k.swap_device().unwrap().in_use(), 0);
}

#[test]
fn read_only_file_mapping_reads_disk_and_drop_caches_evicts_unmapped_pages() {
    let mut s = Sys::v618();
    let p = s.p;
    let contents: Vec<u64> = (0..512).map(|i| i + 0xdead_0000).collect();
    let ino = s.step("create", |k| k.create_file(&contents));
    let a = s
        .step("mmap", |k| {
            k.mmap(p, BASE, PMD, Prot::READ, MapKind::Private(ino), 0, false)
        })
        .unwrap();
    s.madvise(p, a, PMD, Advice::PopulateRead).unwrap();
    assert_eq!(s.k.inode(ino).cache.len(), 512);
    assert!(s.folio(p, a).referenced);
    assert!(!s.folio(p, a).is_anon());
    s.validate(p, a, 0, PMD);
    assert_eq!(s.k.write(p, a, 1), Err(model::Errno::EFAULT), "PROT_READ");
    s.madvise(p, a, PMD / 2, Advice::DontNeed).unwrap();
    s.step("drop_caches", |k| k.drop_caches());
    assert_eq!(s.k.inode(ino).cache.len(), 256, "mapped pages stay cached");
    s.validate(p, a, 0, PMD);
    assert!(
        !s.k.smaps(p, a).unwrap().thp_eligible,
        "no READ_ONLY_THP_FOR_FS"
    );
}

#[test]
fn private_file_write_copies_into_anon_page() {
    let mut s = Sys::v618();
    let p = s.p;
    let ino = s.step("create", |k| k.create_file(&[5, 6]));
    let a = s
        .step("mmap", |k| {
            k.mmap(
                p,
                BASE,
                2 * PAGE,
                Prot::READ_WRITE,
                MapKind::Private(ino),
                0,
                false,
            )
        })
        .unwrap();
    assert_eq!(s.read(p, a), 5);
    s.write(p, a, 9);
    assert!(s.folio(p, a).is_anon());
    assert_eq!(s.k.inode(ino).disk[&0], 5, "the file is unchanged");
    s.write(p, a + PAGE, 10);
    assert!(s.folio(p, a + PAGE).is_anon());
    let c = s.fork(p);
    assert_eq!(s.read(c, a), 9, "a VMA with an anon_vma is copied at fork");
}

#[test]
fn exit_releases_everything() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(1024)).unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, 4 * PMD);
    s.thp_at(p, BASE);
    s.fill(p, BASE, PMD, PMD + 64 * PAGE);
    s.madvise(p, BASE + PMD, 8 * PAGE, Advice::PageOut).unwrap();
    let c = s.fork(p);
    s.write(c, BASE + PMD + PAGE, 1);
    s.step("exit c", |k| k.exit(c)).unwrap();
    s.step("exit p", |k| k.exit(p)).unwrap();
    assert!(s.k.folios.is_empty());
    assert_eq!(s.k.swap_device().unwrap().in_use(), 0);
    assert!(s.k.pids().is_empty());
}

#[test]
fn page_swapped_in_by_a_read_goes_back_to_its_own_slot() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(1024)).unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, 4 * PAGE);
    s.madvise(p, BASE, 4 * PAGE, Advice::PageOut).unwrap();
    // A read fault keeps the page in the swap cache (swap is not half full).
    s.validate(p, BASE, 0, 4 * PAGE);
    assert!(s.folio(p, BASE).swapcache.is_some());
    assert_eq!(s.k.swap_device().unwrap().in_use(), 4);
    s.write(p, BASE, 7);
    s.madvise(p, BASE, 4 * PAGE, Advice::PageOut).unwrap();
    assert_eq!(s.k.swap_device().unwrap().in_use(), 4, "no new slots");
    assert!(s.k.folios.is_empty());
    assert_eq!(s.read(p, BASE), 7, "the written value reached swap");
}
