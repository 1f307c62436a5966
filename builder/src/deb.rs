//! Reading Debian packages (ar + tar + xz/zstd) in Rust. (Being written.)
