//! One module per Engine API area.

pub(crate) mod build;
pub(crate) mod containers;
pub(crate) mod exec;
pub(crate) mod images;
pub(crate) mod networks;
pub(crate) mod system;
pub(crate) mod volumes;
