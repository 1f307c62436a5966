//! dm-verity hash tree (format v1). (Being written.)
