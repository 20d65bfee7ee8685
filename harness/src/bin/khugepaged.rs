//! `khugepaged`: runs the kernel's khugepaged selftests on the model (and, with --backend,
//! on this machine's kernel). Exit codes follow kselftest: 0 passed, 1 failed, 4 skipped,
//! 2 usage error; 141 when stdout was closed early (`| head`), after restoring the machine.

use std::io::Write;

use harness::cli;

fn main() {
    harness::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The host backend re-executes this binary to run each case in its own process.
    if args.first().map(String::as_str) == Some("--host-case") {
        std::process::exit(harness::host::isolate::case_process_main(&args));
    }
    if args.first().map(String::as_str) == Some("--host-scenario") {
        std::process::exit(harness::host::scenario::scenario_process_main(&args));
    }
    if let Some(code) = cli::subcommand(&args) {
        std::process::exit(code);
    }
    let opts = match cli::parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            // A closed stdout (`-h | head -1`) is no error worth a message.
            let _ = std::io::stdout().write_all(cli::usage().as_bytes());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("khugepaged: {e} (run with -h for usage)");
            std::process::exit(2);
        }
    };
    // Rust ignores SIGPIPE, so a closed stdout is an EPIPE error the run handles: it stops
    // starting cases, the case in progress restores the machine, and it exits 141 quietly.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli::run(&opts, &mut out) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("khugepaged: {e}");
            std::process::exit(2);
        }
    }
}
