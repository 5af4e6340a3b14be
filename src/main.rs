fn main() -> std::process::ExitCode {
    dp_bench::cli::main()
}
