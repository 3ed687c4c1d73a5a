//! `ironbridge`: the edge gateway daemon (skeleton; the data path lands with the core-path issue).

fn main() -> anyhow::Result<()> {
    println!("ironbridge {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
