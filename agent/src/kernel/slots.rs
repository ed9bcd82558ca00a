//! Slot lists: the programs of one family scan only the slots listed for
//! them (`FL_NET_SLOTS`, `FL_LSM_SLOTS`, `FL_DNS_SLOTS`), which keeps their
//! per-event cost and their verification small.

use aya::maps::{Array, MapData};

use super::KernelError;

/// Slots of one family of faults, listed for the programs that scan only
/// those (`FL_NET_SLOTS`, `FL_LSM_SLOTS`).
pub(super) struct SlotList {
    pub(super) what: &'static str,
    pub(super) max: u32,
    pub(super) slots: Vec<u32>,
    pub(super) map: Array<MapData, u32>,
}

impl SlotList {
    fn publish(&mut self) -> Result<(), KernelError> {
        for (i, slot) in self.slots.iter().enumerate() {
            self.map
                .set(i as u32, *slot, 0)
                .map_err(|source| KernelError::Map {
                    name: "slot list",
                    source,
                })?;
        }
        Ok(())
    }

    /// Lists or unlists `index` as `member` says; true when the list changed.
    pub(super) fn update(&mut self, index: u32, member: bool) -> Result<bool, KernelError> {
        let listed = self.slots.contains(&index);
        if member && !listed {
            if self.slots.len() >= self.max as usize {
                return Err(KernelError::ListFull(self.max, self.what));
            }
            self.slots.push(index);
        } else if !member && listed {
            self.slots.retain(|s| *s != index);
        } else {
            return Ok(false);
        }
        self.publish()?;
        Ok(true)
    }
}
