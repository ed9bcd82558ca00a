//! The bpf_links and programs loaded in the kernel, ours and everyone's.

/// Ids of every bpf_link in the kernel.
pub fn live_links() -> std::collections::HashSet<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .collect()
}

/// Ids of every program in the kernel.
pub fn live_programs() -> std::collections::HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// bpf_link ids whose program is one of ours (names start with `fl_`).
pub fn our_links() -> Vec<u32> {
    links_of(|n| n.starts_with("fl_") && n != KEEPER_PROGRAM)
}

/// The agent's program that only keeps the TCX hooks on, in a private
/// network namespace where no packet passes.
pub const KEEPER_PROGRAM: &str = "fl_tcx_keep";

/// Links of the TCX keeper program, of any agent.
pub fn keeper_links() -> Vec<u32> {
    links_of(|n| n == KEEPER_PROGRAM)
}

fn links_of(program: impl Fn(&str) -> bool) -> Vec<u32> {
    let ids: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(&program))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .map(|l| l.id())
        .collect()
}

/// Programs of ours still loaded in the kernel.
pub fn our_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fl_")))
        .map(|p| p.id())
        .collect()
}
