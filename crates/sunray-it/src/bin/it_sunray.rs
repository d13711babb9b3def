fn main() {
    sunray_cli::main()
}
