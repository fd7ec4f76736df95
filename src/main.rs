fn main() -> std::process::ExitCode {
    caprepo::cli::main()
}
