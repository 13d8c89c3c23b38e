//! The `xxdc-intake` binary: parses the command line and hands over to the
//! library; the one error that comes back becomes a message and an exit code.

fn main() {
    std::process::exit(xxdc_intake::cli::main());
}
