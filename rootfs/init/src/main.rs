//! berth-init: PID 1 of berth images. (The boot stages land with the bootable-disk work; until
//! then this is the static placeholder the root filesystem carries.)

fn main() {
    let name = std::env::args().next().unwrap_or_default();
    println!("berth-init {} ({name})", env!("CARGO_PKG_VERSION"));
}
