//! Signals during a host run: SIGINT, SIGTERM, SIGHUP and SIGQUIT are deferred while the
//! machine is being changed (journal recovery, a case), so the change is undone before the
//! process ends with 128 + signal.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that interrupted the coordinator, or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// The signal that arrived while signals were deferred, or 0.
pub(crate) fn interrupted_by() -> i32 {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ends the process with 128 + signal if a signal arrived while nothing was changed (waiting
/// for the lock, between cases).
pub(crate) fn exit_if_interrupted() {
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        eprintln!("khugepaged: interrupted by signal {sig}; THP settings restored");
        std::process::exit(128 + sig);
    }
}

/// While alive, SIGINT, SIGTERM, SIGHUP and SIGQUIT only set a flag, so a section that changes
/// the machine (recovery, a case) runs to its end and restores; dropping it puts the previous
/// handlers back and ends the process with 128 + signal if one arrived. Outside such sections
/// the signals keep their usual effect (a test runner stays interruptible).
pub(crate) struct DeferSignals {
    old: Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)>,
}

impl DeferSignals {
    pub(crate) fn new() -> DeferSignals {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let act = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if let Ok(prev) = unsafe { sigaction(s, &act) } {
                old.push((s, prev));
            }
        }
        DeferSignals { old }
    }
}

impl Drop for DeferSignals {
    fn drop(&mut self) {
        for (s, prev) in self.old.drain(..) {
            // SAFETY: puts back the disposition that was in place before.
            let _ = unsafe { nix::sys::signal::sigaction(s, &prev) };
        }
        exit_if_interrupted();
    }
}
