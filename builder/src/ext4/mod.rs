//! ext4 writer: turns a [`Manifest`](crate::manifest::Manifest) into an ext4 image.
//! (Being written; see the module docs once it lands.)
