//! What host and guest agree on: the marker of protocol lines, the command encoding and the
//! isa-debug-exit port.

/// Prefix of the guest init's own lines on the console.
pub const MARK: &str = "@@kernels:";
/// The isa-debug-exit device's I/O port (qemu's default).
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// Status the init reports when it could not do its own job (not the harness's status).
pub const STATUS_INIT_FAILED: u8 = 100;
/// Separates the arguments of one command line in /kernels/commands.
const SEP: char = '\u{1f}';

pub fn join_command(argv: &[String]) -> String {
    argv.join(&SEP.to_string())
}

pub fn split_command(line: &str) -> Vec<String> {
    line.split(SEP).map(str::to_string).collect()
}
