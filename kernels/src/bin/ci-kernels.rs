//! `ci/kernels`: the kernel matrix. list | fetch KERNEL… | run KERNEL -- ARGS |
//! record KERNEL… | selftest KERNEL… | newest KERNEL… | report | probe KERNEL…. Exit
//! codes: the guest's for `run`, else 0 ok, 1 failure, 2 usage error.

use std::fs;
use std::time::Duration;

use kernels::protocol::MARK;
use kernels::{catalog, fetch, matrix, vm};

const USAGE: &str = "usage: ci/kernels list
       ci/kernels fetch KERNEL...|all
       ci/kernels run [--timeout SECS] [--repeat N] [--c-selftest | --c-selftest-from SERIES]
                 KERNEL -- ARGS...
                 (the harness's arguments; `scenario FILE...` ships the files and their
                 includes to the guest, and `scenario --record DIR` brings the recordings
                 back into DIR; --repeat: N runs in one boot; --c-selftest: run the
                 release's own C selftest, as `selftest` builds it, instead;
                 --c-selftest-from SERIES: the C selftest of that source series (6.1, 6.12,
                 7.2, 7.3) on whatever KERNEL is)
       ci/kernels record [--timeout SECS] KERNEL...|all
       ci/kernels selftest [--timeout SECS] KERNEL...|all   (the kernel's own C selftest)
       ci/kernels newest [--timeout SECS] KERNEL...|all     (the newest catalogue and the
                 newest C selftest on each kernel; fixtures/<release>/newest-selftest/)
       ci/kernels report [--markdown]
       ci/kernels probe [--timeout SECS] KERNEL...|all   (checks the deterministic khugepaged mode)
KERNEL is a series from `list` (6.1, 6.12, ..., 7.3), or a path: a kernel build tree (with
vmlinux), a .deb or a directory of .debs, a bzImage or a vmlinux. The cache is $KHUGEPAGED_KERNELS_CACHE,
else /var/cache/khugepaged-kernels (root) or $XDG_CACHE_HOME/khugepaged-kernels.";

/// The names given, with `all` for every series of the catalogue; each checked.
fn kernels_from(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("usage error: no KERNEL given".into());
    }
    if names.len() == 1 && names[0] == "all" {
        return Ok(catalog::KERNELS
            .iter()
            .map(|k| k.series.to_string())
            .collect());
    }
    for n in names {
        if !(n.contains('/') || std::path::Path::new(n).exists()) {
            catalog::find(n)?;
        }
    }
    Ok(names.to_vec())
}

fn take_timeout(args: &mut Vec<String>, default: u64) -> Result<Duration, String> {
    if let Some(i) = args.iter().position(|a| a == "--timeout") {
        let v = args
            .get(i + 1)
            .ok_or("--timeout needs a number of seconds")?
            .parse::<u64>()
            .map_err(|_| "--timeout: expected a number of seconds".to_string())?;
        args.drain(i..i + 2);
        return Ok(Duration::from_secs(v));
    }
    Ok(Duration::from_secs(default))
}

/// `--repeat N` (default 1).
fn take_repeat(args: &mut Vec<String>) -> Result<usize, String> {
    let Some(i) = args.iter().position(|a| a == "--repeat") else {
        return Ok(1);
    };
    let n = args
        .get(i + 1)
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .ok_or("usage error: --repeat needs a number of runs (1 or more)")?;
    args.drain(i..i + 2);
    Ok(n)
}

/// Removes `name VALUE` (before the `--`) and returns VALUE.
fn take_value(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let Some(i) = args[..end].iter().position(|a| a == name) else {
        return Ok(None);
    };
    let v = args
        .get(i + 1)
        .filter(|_| i + 1 < end)
        .cloned()
        .ok_or_else(|| format!("usage error: {name} needs a value"))?;
    args.drain(i..i + 2);
    Ok(Some(v))
}

/// Removes `flag` (before the `--`) and says whether it was there.
fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    match args[..end].iter().position(|a| a == flag) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match real_main(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ci/kernels: {e}");
            if e.starts_with("usage") {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

fn real_main(mut args: Vec<String>) -> Result<i32, String> {
    if args.is_empty() {
        return Err(format!("usage error: no command\n{USAGE}"));
    }
    let cmd = args.remove(0);
    match cmd.as_str() {
        "list" => {
            println!(
                "{:<6} {:<34} {:<20} cached release",
                "series", "package", "suite"
            );
            for k in catalog::KERNELS {
                let cached = fetch::cached(k)
                    .map(|f| f.release)
                    .unwrap_or_else(|| "-".into());
                println!("{:<6} {:<34} {:<20} {cached}", k.series, k.package, k.suite);
            }
            println!("cache: {}", catalog::cache_root().display());
            Ok(0)
        }
        "fetch" => {
            let mut failed = 0;
            for k in kernels_from(&args)? {
                let t = std::time::Instant::now();
                match fetch::resolve(&k) {
                    Ok(f) => println!(
                        "{}: {} ({}) in {:.1}s",
                        k,
                        f.release,
                        f.vmlinux.display(),
                        t.elapsed().as_secs_f64()
                    ),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{k}: {e}");
                    }
                }
            }
            Ok(i32::from(failed > 0))
        }
        "run" => {
            let timeout = take_timeout(&mut args, 1800)?;
            let repeat = take_repeat(&mut args)?;
            let c_from = take_value(&mut args, "--c-selftest-from")?;
            if let Some(s) = &c_from {
                if !fetch::SOURCE_SERIES.contains(&s.as_str()) {
                    return Err(format!(
                        "usage error: --c-selftest-from {s}: Debian's linux-source packages are {}",
                        fetch::SOURCE_SERIES.join(", ")
                    ));
                }
            }
            let c_selftest = take_flag(&mut args, "--c-selftest");
            if c_selftest && c_from.is_some() {
                return Err(
                    "usage error: --c-selftest and --c-selftest-from: give one of them".into(),
                );
            }
            let c_selftest = c_selftest || c_from.is_some();
            let sep = args
                .iter()
                .position(|a| a == "--")
                .ok_or_else(|| format!("usage error: run KERNEL -- ARGS\n{USAGE}"))?;
            let harness_args = args.split_off(sep + 1);
            args.pop();
            let [name] = args.as_slice() else {
                return Err(format!("usage error: run takes one KERNEL\n{USAGE}"));
            };
            let f = fetch::resolve(name)?;
            let shipped = if c_selftest {
                kernels::scenarios::Shipped {
                    args: harness_args.clone(),
                    ..Default::default()
                }
            } else {
                kernels::scenarios::ship(&harness_args)?
            };
            let mut extra_files = shipped.files.clone();
            let mut argv = if c_selftest {
                let series = match c_from.as_deref() {
                    Some(s) => s,
                    None => fetch::selftest_series(&f.release)
                        .ok_or_else(|| format!("no source series for release {}", f.release))?,
                };
                let (bin, version) = fetch::selftest_binary(series)?;
                eprintln!("ci/kernels: the C selftest of linux-source-{series} {version}");
                let data = fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
                extra_files.push(("bin/khugepaged-c".to_string(), data, 0o755));
                vec!["/bin/khugepaged-c".to_string()]
            } else {
                vec!["/bin/khugepaged".to_string()]
            };
            argv.extend(shipped.args.clone());
            let job = vm::GuestJob {
                commands: vec![argv; repeat],
                extra_files,
                timeout,
                stream: true,
            };
            let r = vm::boot(&f, &job)?;
            shipped.bring_back(&r.out)?;
            eprintln!(
                "ci/kernels: {} exited {} (boot {:.1}s, total {:.1}s)",
                f.release,
                r.status,
                r.boot.as_secs_f64(),
                r.total.as_secs_f64()
            );
            Ok(i32::from(r.status))
        }
        "record" => {
            let timeout = take_timeout(&mut args, 3600)?;
            matrix::record_all(&kernels_from(&args)?, timeout)
        }
        "selftest" => {
            let timeout = take_timeout(&mut args, 3600)?;
            matrix::selftest_all(&kernels_from(&args)?, timeout)
        }
        "newest" => {
            let timeout = take_timeout(&mut args, 3600)?;
            kernels::newest::newest_all(&kernels_from(&args)?, timeout)
        }
        "probe" => {
            let timeout = take_timeout(&mut args, 600)?;
            let mut failed = 0;
            for k in kernels_from(&args)? {
                let f = fetch::resolve(&k)?;
                let job = vm::GuestJob {
                    commands: vec![vec!["/init".to_string(), "probe".to_string()]],
                    extra_files: Vec::new(),
                    timeout,
                    stream: false,
                };
                let r = vm::boot(&f, &job)?;
                let report: Vec<&String> = r
                    .console
                    .iter()
                    .skip_while(|l| !l.contains(&format!("{MARK} run 0")))
                    .skip(1)
                    .take_while(|l| !l.contains(&format!("{MARK} exit 0")))
                    .collect();
                println!("{} ({}):", k, f.release);
                for l in report {
                    println!("  {l}");
                }
                if r.status != 0 {
                    failed += 1;
                }
            }
            Ok(i32::from(failed > 0))
        }
        "report" => matrix::report(args.iter().any(|a| a == "--markdown")),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        c => Err(format!("usage error: unknown command {c:?}\n{USAGE}")),
    }
}
