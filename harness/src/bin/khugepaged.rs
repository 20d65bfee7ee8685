//! `khugepaged`: runs the kernel's khugepaged selftests on the model (and, with --backend,
//! on this machine's kernel). Exit codes follow kselftest: 0 passed, 1 failed, 4 skipped,
//! 2 usage error.

use harness::cli;

fn main() {
    harness::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The host backend re-executes this binary to run each case in its own process.
    if args.first().map(String::as_str) == Some("--host-case") {
        std::process::exit(harness::host::isolate::case_process_main(&args));
    }
    let opts = match cli::parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", cli::usage());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("khugepaged: {e} (run with -h for usage)");
            std::process::exit(2);
        }
    };
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
