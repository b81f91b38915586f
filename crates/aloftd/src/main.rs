//! The `aloftd` binary: all behaviour lives in the `aloftd` library.

/// mimalloc: the proxy allocates per request from several threads, where glibc's malloc
/// spent a tenth of the proxy benchmark's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    aloftd::main()
}
