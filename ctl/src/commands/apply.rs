//! `faultctl apply -f FILE`: the experiment file, read before connecting;
//! [`super::inject::start`] sends it.

use std::path::Path;

use crate::spec::{self, Experiment};

/// Reads the experiment file (`-` is standard input).
pub fn load(file: &Path) -> Result<Experiment, spec::SpecError> {
    spec::load(file)
}
