//! The `flare` command.

fn main() -> std::process::ExitCode {
    flare_cli::main_with_args(std::env::args_os())
}
