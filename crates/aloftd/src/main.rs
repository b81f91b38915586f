//! The `aloftd` binary: all behaviour lives in the `aloftd` library.

fn main() -> std::process::ExitCode {
    aloftd::main()
}
