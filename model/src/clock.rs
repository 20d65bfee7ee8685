//! Virtual time: what sleeping means to the model. khugepaged sleeps `scan_sleep_millisecs`
//! between two `khugepaged_do_scan` calls (`khugepaged_wait_work`), so a process that sleeps
//! gives it one wake-up per period. The model's THP allocations never fail, so khugepaged never
//! takes its `alloc_sleep_millisecs` back-off (`khugepaged_alloc_sleep`); that setting is
//! stored and shown, and changes nothing.
//!
//! Nothing else in the model depends on time: the clock only orders khugepaged's wake-ups
//! against the caller's sleeps.

use crate::kernel::Kernel;
use crate::khugepaged::CollapseReport;

/// What [`Kernel::khugepaged_run_until`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunUntil {
    /// The condition held (false: the full-scan budget ran out first).
    pub met: bool,
    /// khugepaged wake-ups performed.
    pub wakeups: u64,
    /// Full scans completed meanwhile.
    pub full_scans: u64,
    /// The decision records of every wake-up, oldest first.
    pub records: Vec<CollapseReport>,
}

impl Kernel {
    /// Virtual time since boot, in microseconds.
    pub fn now_us(&self) -> u64 {
        self.clock_us
    }

    /// khugepaged's sleep between two scans, in microseconds (a 0 setting still yields once
    /// per millisecond, so time moves).
    pub fn khugepaged_period_us(&self) -> u64 {
        (self.thp.khugepaged.scan_sleep_millisecs as u64 * 1000).max(1000)
    }

    /// The caller sleeps `us` microseconds. khugepaged wakes once per `scan_sleep_millisecs`
    /// of sleep (time slept before carries over to the next call), and runs one
    /// `khugepaged_do_scan` per wake-up. Returns the decision records of those wake-ups (the
    /// tail of [`Kernel::collapse_log`]).
    pub fn sleep_us(&mut self, us: u64) -> &[CollapseReport] {
        self.clock_us += us;
        self.khugepaged_slept_us += us;
        let from = self.collapse_log.len();
        loop {
            let period = self.khugepaged_period_us();
            if self.khugepaged_slept_us < period {
                break;
            }
            self.khugepaged_slept_us -= period;
            self.khugepaged_do_scan();
        }
        &self.collapse_log[from..]
    }

    /// The caller sleeps `ms` milliseconds (see [`Kernel::sleep_us`]).
    pub fn sleep_ms(&mut self, ms: u64) -> &[CollapseReport] {
        self.sleep_us(ms * 1000)
    }

    /// One khugepaged period passes and khugepaged wakes once; returns its records.
    pub fn khugepaged_wake(&mut self) -> &[CollapseReport] {
        self.clock_us += self.khugepaged_period_us();
        self.khugepaged_do_scan()
    }

    /// Lets khugepaged run, one wake-up per period of virtual time, until `stop` holds
    /// (checked before the first wake-up and after each, with the records of that wake-up),
    /// or until `max_full_scans` full scans have completed, or `max_wakeups` wake-ups passed
    /// (a stopped thread or an empty scan list never completes a scan).
    pub fn khugepaged_run_until(
        &mut self,
        max_full_scans: u64,
        max_wakeups: u64,
        mut stop: impl FnMut(&Kernel, &[CollapseReport]) -> bool,
    ) -> RunUntil {
        let start = self.khugepaged_state.full_scans;
        let mut out = RunUntil::default();
        let mut last = self.collapse_log.len()..self.collapse_log.len();
        loop {
            if stop(self, &self.collapse_log[last.clone()]) {
                out.met = true;
                break;
            }
            let done = self.khugepaged_state.full_scans - start;
            if done >= max_full_scans || out.wakeups >= max_wakeups {
                break;
            }
            let from = self.collapse_log.len();
            self.khugepaged_wake();
            last = from..self.collapse_log.len();
            out.wakeups += 1;
            out.records
                .extend_from_slice(&self.collapse_log[last.clone()]);
        }
        out.full_scans = self.khugepaged_state.full_scans - start;
        out
    }
}
