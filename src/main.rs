fn main() {
    if let Err(err) = tunescope::cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
