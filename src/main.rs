fn main() -> std::process::ExitCode {
    miaas_agent::program::main()
}
