//! Regular-file collapse from 7.2 (read in linux-source-7.2/7.3 against 6.12): files open for
//! writing collapse (`file_thp_enabled`, `collapse_file` without the open-for-write refusal),
//! a dirty folio still stops collapse_file, and MADV_COLLAPSE writes dirty folios back and
//! tries once more (`collapse_single_pmd`'s writeback retry), while khugepaged does not.

mod common;
use common::*;
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::{Errno, KernelProfile};

/// A 2 MiB regular file with known contents, open read-write and mapped shared read-write,
/// its page cache dropped.
fn rw_file(release: &str) -> Sys {
    rw_file_inode(release).0
}

fn rw_file_inode(release: &str) -> (Sys, model::filemap::InodeId) {
    let mut s = Sys::new(KernelProfile::for_release(release).unwrap());
    for (path, v) in [("enabled", "madvise"), ("defrag", "always")] {
        s.k.sysfs_write(path, v).unwrap();
    }
    let inode = s.step("create", |k| k.create_empty_file());
    let data: Vec<u64> = (0..512).map(|i| i + 0xdead_0000).collect();
    s.step("write", |k| k.file_write_pages(inode, 0, &data));
    let pid = s.p;
    s.step("mmap", |k| {
        k.mmap(
            pid,
            BASE,
            PMD,
            Prot::READ_WRITE,
            MapKind::Shared(inode),
            0,
            false,
        )
    })
    .unwrap();
    s.step("drop_caches", |k| k.drop_caches());
    (s, inode)
}

fn file_pmd_mapped(s: &Sys) -> u64 {
    s.k.smaps(s.p, BASE).unwrap().file_pmd_mapped
}

#[test]
fn a_file_open_for_writing_collapses_from_7_2_once_clean() {
    for (release, collapses) in [("7.1", false), ("7.2", true), ("7.3", true)] {
        let mut s = rw_file(release);
        let p = s.p;
        s.madvise(p, BASE, PMD, Advice::PopulateRead).unwrap();
        s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
        let r = s.step("MADV_COLLAPSE", |k| k.madvise_collapse(p, BASE, PMD));
        assert_eq!(r.is_ok(), collapses, "{release}: {r:?}");
        s.validate(p, BASE, 0, PMD);
        if collapses {
            assert_eq!(file_pmd_mapped(&s), 2048, "{release}");
        }
    }
}

#[test]
fn madv_collapse_writes_dirty_folios_back_and_retries_from_7_2() {
    for (release, collapses) in [("7.1", false), ("7.3", true)] {
        let mut s = rw_file(release);
        let p = s.p;
        // Written through the mapping: every folio dirty.
        s.madvise(p, BASE, PMD, Advice::PopulateWrite).unwrap();
        s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
        let r = s.step("MADV_COLLAPSE", |k| k.madvise_collapse(p, BASE, PMD));
        assert_eq!(r.is_ok(), collapses, "{release}: {r:?}");
        if !collapses {
            assert_eq!(r, Err(Errno::EINVAL), "{release}");
        }
        s.validate(p, BASE, 0, PMD);
    }
}

#[test]
fn khugepaged_leaves_a_dirty_file_range_alone() {
    let mut s = rw_file("7.3");
    let p = s.p;
    s.k.sysfs_write("khugepaged/scan_sleep_millisecs", "10")
        .unwrap();
    s.madvise(p, BASE, PMD, Advice::PopulateWrite).unwrap();
    s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
    s.step("scans", |k| k.khugepaged_run_full_scans(3, 64));
    assert_eq!(file_pmd_mapped(&s), 0);
    // Written back (msync), the same range collapses.
    s.step("msync", |k| k.msync(p, BASE, PMD)).unwrap();
    s.step("scans", |k| k.khugepaged_run_full_scans(3, 64));
    s.madvise(p, BASE, PMD, Advice::PopulateRead).unwrap();
    assert_eq!(file_pmd_mapped(&s), 2048);
    s.validate(p, BASE, 0, PMD);
}

#[test]
fn msync_writes_the_mapped_pages_to_disk() {
    let (mut s, inode) = rw_file_inode("7.3");
    let p = s.p;
    s.write(p, BASE + 3 * PAGE, 77);
    let disk = |s: &Sys| s.k.inode(inode).disk.get(&3).copied();
    assert_eq!(disk(&s), Some(3 + 0xdead_0000), "not written back yet");
    assert!(s.k.folio(s.folio_at(p, BASE + 3 * PAGE).0).dirty);
    s.step("msync", |k| k.msync(p, BASE, PMD)).unwrap();
    assert_eq!(disk(&s), Some(77));
    assert!(!s.k.folio(s.folio_at(p, BASE + 3 * PAGE).0).dirty);
    // Unmapped and dropped, the page comes back from disk with the new contents.
    s.step("munmap", |k| k.munmap(p, BASE, PMD)).unwrap();
    s.step("drop_caches", |k| k.drop_caches());
    assert_eq!(
        s.step("msync unmapped", |k| k.msync(p, BASE, PMD)),
        Err(Errno::ENOMEM)
    );
    s.step("mmap", |k| {
        k.mmap(p, BASE, PMD, Prot::READ, MapKind::Shared(inode), 0, false)
    })
    .unwrap();
    assert_eq!(s.read(p, BASE + 3 * PAGE), 77);
    assert_eq!(s.read(p, BASE + 4 * PAGE), 4 + 0xdead_0000);
}
