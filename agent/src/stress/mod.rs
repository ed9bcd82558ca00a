//! The agent's own work for pressure faults: stressor children and the
//! pieces the agent runs itself.

pub mod fill;
pub mod io;
