//! Benchmark of model operations: PTE-level operation rates, memory per mapped page, and
//! whether costs follow the pages touched rather than the address-space size.
//!
//! Run with `cargo bench -p model`. Figures are printed, never asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::thp_settings::ThpEnabled;
use model::{Kernel, KernelProfile, HPAGE_PMD_SIZE, PAGE_SIZE};

/// Counts live heap bytes so memory per mapped page can be measured.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BASE: u64 = 1 << 30;
const GIB: u64 = 1 << 30;

fn rate(label: &str, ops: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let secs = t.elapsed().as_secs_f64();
    let per_sec = ops as f64 / secs;
    println!(
        "{label:<52} {ops:>9} ops  {:>8.1} ms  {:>12.0} ops/s  {:>7.1} ns/op",
        secs * 1e3,
        per_sec,
        secs * 1e9 / ops as f64
    );
    per_sec
}

fn kernel() -> (Kernel, u32) {
    let mut k = Kernel::new(KernelProfile::v6_18());
    k.thp.enabled = ThpEnabled::Never;
    let p = k.pids()[0];
    (k, p)
}

fn map_anon(k: &mut Kernel, p: u32, addr: u64, len: u64) {
    k.mmap(
        p,
        addr,
        len,
        Prot::READ_WRITE,
        MapKind::PrivateAnon,
        0,
        false,
    )
    .unwrap();
}

fn main() {
    println!("model operation benchmark (one core, release build)\n");
    let pages = GIB / PAGE_SIZE;

    // Small-page write faults over 1 GiB.
    let before = LIVE.load(Ordering::Relaxed);
    let (mut k, p) = kernel();
    map_anon(&mut k, p, BASE, GIB);
    rate("write fault, order-0 anon page", pages, || {
        for i in 0..pages {
            k.write(p, BASE + i * PAGE_SIZE, i).unwrap();
        }
    });
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: {:.1} MiB for {pages} mapped order-0 pages = {:.1} bytes per page",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / pages as f64
    );

    rate("read hit (no fault)", pages, || {
        let mut sum = 0u64;
        for i in 0..pages {
            sum = sum.wrapping_add(k.read(p, BASE + i * PAGE_SIZE).unwrap());
        }
        std::hint::black_box(sum);
    });

    let mut child = 0;
    rate("fork, per PTE copied", pages, || {
        child = k.fork(p).unwrap();
    });
    rate("COW write fault after fork (copy)", pages, || {
        for i in 0..pages {
            k.write(child, BASE + i * PAGE_SIZE, i + 1).unwrap();
        }
    });
    rate("COW write fault, sole owner (reuse)", pages, || {
        for i in 0..pages {
            k.write(p, BASE + i * PAGE_SIZE, i + 2).unwrap();
        }
    });
    rate("munmap, per PTE zapped", pages, || {
        k.munmap(child, BASE, GIB).unwrap();
    });
    rate("MADV_DONTNEED, per PTE zapped", pages, || {
        k.madvise(p, BASE, GIB, Advice::DontNeed).unwrap();
    });

    // PMD THPs: faults, splits.
    let (mut k, p) = kernel();
    k.thp.enabled = ThpEnabled::Always;
    map_anon(&mut k, p, BASE, GIB);
    let thps = GIB / HPAGE_PMD_SIZE;
    rate("THP write fault (per 2 MiB PMD)", thps, || {
        for i in 0..thps {
            k.write(p, BASE + i * HPAGE_PMD_SIZE, i).unwrap();
        }
    });
    rate(
        "PMD split via VMA split, per PTE created",
        thps * 512,
        || {
            for i in 0..thps {
                k.madvise(p, BASE + i * HPAGE_PMD_SIZE, PAGE_SIZE, Advice::NoHugePage)
                    .unwrap();
            }
        },
    );
    rate("invariant check, per mapped page", pages, || {
        k.check_invariants().unwrap();
    });

    // khugepaged: a full scan of 1 GiB that collapses nothing (every range cold, so each scan
    // reads all 512 PTEs and ends in SCAN_LACK_REFERENCED_PAGE), then MADV_COLLAPSE of it all;
    // once with decision records of counts only (as the selftest harness runs), once with the
    // pictures and per-folio answers (the default, and scenarios).
    for detail in [false, true] {
        let what = if detail {
            "detailed records"
        } else {
            "counts only"
        };
        let (mut k, p) = kernel();
        k.decision_detail = detail;
        map_anon(&mut k, p, BASE, GIB);
        for i in 0..pages {
            k.write(p, BASE + i * PAGE_SIZE, i).unwrap();
        }
        k.thp.enabled = ThpEnabled::Madvise;
        k.madvise(p, BASE, GIB, Advice::HugePage).unwrap();
        k.madvise(p, BASE, GIB, Advice::Cold).unwrap();
        k.thp.khugepaged.pages_to_scan = u32::MAX;
        rate(
            &format!("khugepaged full scan of 1 GiB, per PTE ({what})"),
            pages,
            || {
                k.khugepaged_run_full_scans(1, 4);
            },
        );
        let log = k.take_collapse_log();
        println!(
            "  ({} ranges scanned, {} collapsed, full_scans={})",
            log.len(),
            k.khugepaged_state.pages_collapsed,
            k.khugepaged_state.full_scans
        );
        rate(
            &format!("MADV_COLLAPSE of 1 GiB, per PTE ({what})"),
            pages,
            || {
                k.madvise_collapse(p, BASE, GIB).unwrap();
            },
        );
        println!(
            "  ({} THPs after MADV_COLLAPSE)",
            k.smaps(p, BASE).unwrap().anon_huge_pages / 2048
        );
    }

    // Scaling: the same 65536 faults in an empty address space and beside 1 GiB of mapped
    // memory (8 TiB away): cost follows the pages touched, not the address space.
    for (label, populate) in [
        ("65536 faults, empty mm", false),
        ("65536 faults, beside 1 GiB mapped", true),
    ] {
        let (mut k, p) = kernel();
        if populate {
            let far = BASE + (8u64 << 40);
            map_anon(&mut k, p, far, GIB);
            for i in 0..pages {
                k.write(p, far + i * PAGE_SIZE, i).unwrap();
            }
        }
        map_anon(&mut k, p, BASE, 65536 * PAGE_SIZE);
        rate(label, 65536, || {
            for i in 0..65536 {
                k.write(p, BASE + i * PAGE_SIZE, i).unwrap();
            }
        });
    }
}
