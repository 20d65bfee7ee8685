//! What makes the host backend's safe methods safe: the address ranges it mapped itself, and
//! the checks that keep its raw memory accesses and its mapping calls inside them, plus the
//! single-thread check fork(2) needs.

use procfs::process::Process;

/// Page-aligned `[start, end)` ranges this backend mapped and has not unmapped, sorted and
/// disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedRanges(Vec<(u64, u64)>);

fn page_end(addr: u64, len: u64) -> Option<u64> {
    let end = addr.checked_add(len)?;
    let ps = model::PAGE_SIZE;
    end.checked_add(ps - 1).map(|e| e & !(ps - 1))
}

impl MappedRanges {
    /// The ranges as (address, length).
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.0.iter().map(|&(s, e)| (s, e - s)).collect()
    }

    /// Records `[addr, addr + len)` (rounded up to whole pages) as mapped.
    pub fn add(&mut self, addr: u64, len: u64) {
        let Some(end) = page_end(addr, len) else {
            return;
        };
        self.remove(addr, len);
        self.0.push((addr, end));
        self.0.sort_unstable();
        // Merge neighbours so containment checks see one range.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for (s, e) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// Forgets `[addr, addr + len)` (rounded up to whole pages), splitting ranges as munmap does.
    pub fn remove(&mut self, addr: u64, len: u64) {
        let Some(end) = page_end(addr, len) else {
            return;
        };
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(s, e) in &self.0 {
            if e <= addr || s >= end {
                out.push((s, e));
                continue;
            }
            if s < addr {
                out.push((s, addr));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.0 = out;
    }

    /// Whether all of `[addr, addr + len)` lies in ranges this backend mapped.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.0.iter().any(|&(s, e)| s <= addr && end <= e)
    }

    /// The first mapping of this process that overlaps `[addr, addr + len)` but was not made by
    /// this backend (the program's own code, heap, stacks), as "start-end path", if any.
    /// munmap, madvise and MREMAP_FIXED there would destroy the harness's own memory.
    pub fn foreign_overlap(&self, addr: u64, len: u64) -> Result<Option<String>, String> {
        let Some(end) = page_end(addr, len) else {
            return Ok(Some(format!("{addr:#x}+{len:#x} wraps around")));
        };
        let maps = Process::myself()
            .and_then(|p| p.maps())
            .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
        for m in maps {
            let (s, e) = m.address;
            let (lo, hi) = (s.max(addr), e.min(end));
            if lo >= hi {
                continue;
            }
            // Every overlapping part must be ours.
            let ours = self
                .0
                .iter()
                .filter(|&&(rs, re)| rs < hi && re > lo)
                .map(|&(rs, re)| re.min(hi) - rs.max(lo))
                .sum::<u64>();
            if ours < hi - lo {
                return Ok(Some(format!("{s:#x}-{e:#x} {:?}", m.pathname)));
            }
        }
        Ok(None)
    }
}

/// The number of threads of this process, from the `Threads:` line of /proc/self/status.
pub fn thread_count() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "/proc/self/status has no readable Threads: line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_merge_and_contain() {
        let mb = 0x10_0000;
        let mut r = MappedRanges::default();
        r.add(0x4000_0000, 4 * mb);
        assert!(r.contains(0x4000_0000, 4 * mb));
        assert!(!r.contains(0x4000_0000, 4 * mb + 1));
        assert!(!r.contains(0x3fff_f000, 8));
        r.remove(0x4000_0000 + mb, mb);
        assert!(!r.contains(0x4000_0000 + mb, 4));
        assert!(r.contains(0x4000_0000 + 2 * mb, 2 * mb));
        r.add(0x4000_0000 + mb, 3); // rounds up to a page
        assert!(r.contains(0x4000_0000 + mb, 0x1000));
        assert!(!r.contains(0x4000_0000 + mb + 0x1000, 4));
        r.add(0x4000_0000, 4 * mb);
        assert_eq!(r, {
            let mut one = MappedRanges::default();
            one.add(0x4000_0000, 4 * mb);
            one
        });
        assert!(!r.contains(u64::MAX - 2, 8));
    }

    #[test]
    fn the_programs_own_memory_is_foreign() {
        let r = MappedRanges::default();
        let on_stack = 0u64;
        let addr = &on_stack as *const u64 as u64 & !(model::PAGE_SIZE - 1);
        assert!(r.foreign_overlap(addr, 8).unwrap().is_some());
        assert!(thread_count().unwrap() >= 1);
    }
}
