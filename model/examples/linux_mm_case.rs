//! The 2024 linux-mm case written the way its C program is, against the model's API: a THP
//! shared over fork, pages 1..256 PTE-mapped by both processes, page 0 by neither, the child
//! writes its own page 0, max_ptes_shared=0; then khugepaged decides, once per kernel era.
//!
//!     cargo run -p model --example linux_mm_case
//!
//! Each step is the system call the C program makes; the decision records say why.

use model::madvise::Advice;
use model::mmap::Mmap;
use model::{Errno, Kernel, KernelProfile, HPAGE_PMD_SIZE, PAGE_SIZE};

fn run(release: &str) -> Result<(), Errno> {
    let profile = KernelProfile::for_release(release).expect("a release the model knows");
    let mut k = Kernel::boot(profile);
    k.sysfs_write("enabled", "madvise")?;
    k.sysfs_write("khugepaged/max_ptes_shared", "0")?;
    k.sysfs_write("khugepaged/scan_sleep_millisecs", "10")?;
    let parent = k.spawn();

    // p = mmap(NULL, 2M, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    let p = Mmap::anon(HPAGE_PMD_SIZE)
        .at(0x4000_0000)
        .call(&mut k, parent)?;
    k.madvise(parent, p, HPAGE_PMD_SIZE, Advice::HugePage)?;
    k.write(parent, p, 1)?; // a THP at fault
    k.madvise(parent, p, PAGE_SIZE, Advice::DontNeed)?; // page 0 gone
    k.madvise(
        parent,
        p + 257 * PAGE_SIZE,
        255 * PAGE_SIZE,
        Advice::DontNeed,
    )?;
    let child = k.fork(parent)?;
    k.write(child, p, 2)?; // the child's own page 0

    // sleep(1): khugepaged wakes every 10 ms; stop as soon as it has decided on the child.
    let run = k.khugepaged_run_until(10, 1000, |_, recs| recs.iter().any(|r| r.pid == child));
    let rss = |k: &Kernel, pid| k.smaps_at(pid, p + 5 * PAGE_SIZE).map(|s| s.rss);
    println!(
        "{release}: after {} ms, rss parent {} kB, child {} kB",
        k.now_us() / 1000,
        rss(&k, parent)?,
        rss(&k, child)?
    );
    for r in run.records.iter().filter(|r| r.pid == child) {
        println!(
            "  child {:?}: {} none_or_zero={} shared={} writable={} ({})",
            r.stage,
            r.result,
            r.none_or_zero,
            r.shared,
            r.writable,
            r.predicate.name()
        );
    }
    println!(
        "  thp_collapse_alloc {}",
        k.vmstat_read("thp_collapse_alloc").unwrap_or(0)
    );
    Ok(())
}

fn main() {
    for release in ["6.1", "6.12", "6.18"] {
        if let Err(e) = run(release) {
            eprintln!("{release}: {}", e.name());
            std::process::exit(1);
        }
    }
}
