//! The `aloft` binary: all behaviour lives in the `aloft_cli` library.

fn main() -> std::process::ExitCode {
    aloft_cli::main()
}
