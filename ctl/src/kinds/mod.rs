//! Fault kinds: one module per kind, `kinds/<kind>.rs`, holding everything
//! `faultctl` knows about it: its experiment-file type (serde), its
//! conversion from and to the wire message, and its `inject` subcommand's
//! flags and how they become the fault ([`CtlKind`]). What kinds share is
//! elsewhere: [`net`] (direction, packet match, network scopes and flags),
//! `cli::inject` (process targets, lifetime flags), `spec` (the experiment
//! around the faults, value parsers).
//!
//! The list of kinds is the proto's (`faultline_proto::for_each_kind!`):
//! `registry!` below makes, from it alone, the [`Fault`] enum, the file's
//! single-key map, the dispatch to and from the wire and the `inject`
//! subcommands. A kind added to the proto without its module does not
//! compile.

pub mod host;
pub mod net;

use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    cli::inject::RunArgs,
    spec::{self, WireError, kind},
};

/// What a kind's module implements; `registry!` only dispatches to it.
/// The type is the fault as an experiment file writes it (under the kind's
/// name), named like its wire message.
pub trait CtlKind: Sized {
    /// The wire message (`faultline_proto::v1::<Variant>`).
    type Wire;
    /// The flags of `faultctl inject <kind>`; the struct's doc comment is
    /// the subcommand's help (without one, clap would show the doc comment
    /// of a struct it flattens; a test checks).
    type Args: clap::Args + clap::FromArgMatches + std::fmt::Debug;

    /// The wire form, as `apply` and `inject` send it.
    fn to_wire(self) -> Self::Wire;

    /// What the agent reports, in the shape `apply -f` takes back.
    fn from_wire(wire: &Self::Wire) -> Result<Self, WireError>;

    /// The fault that `inject <kind>`'s flags give, with its target and
    /// lifetime flags; an error is a combination clap cannot refuse.
    fn from_args(args: Self::Args) -> anyhow::Result<Injection<Self>>;

    /// Wire faults of the kind with every field set away from its default:
    /// the round-trip tests walk every kind through the file with them.
    #[cfg(test)]
    fn examples() -> Vec<Self::Wire>;
}

/// What an `inject` subcommand's flags make: one fault, whom it applies to,
/// and the flags every subcommand shares.
pub struct Injection<K> {
    pub fault: K,
    pub target: spec::Target,
    pub run: RunArgs,
}

/// Everything the list of kinds makes: for each `Variant module` pair, the
/// module `kinds/<module>.rs` with its type `module::Variant`.
macro_rules! registry {
    ($($variant:ident $module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// One fault.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(try_from = "FaultEntry", into = "FaultEntry")]
        pub enum Fault {
            $($variant($module::$variant),)+
        }

        impl Fault {
            /// The kind's name, e.g. "packet_loss": the key of the fault in a file.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($module),)+
                }
            }
        }

        /// How a fault is written: a map whose single key is the fault kind,
        /// `- syscall_error: {...}`. A struct rather than a serde enum because
        /// `yaml_serde` (like `serde_yaml` 0.9) wants enums as `!tags`, and so
        /// that a misspelt kind is an "unknown field" that lists the known
        /// kinds, in YAML and JSON alike. The field names are the kinds'.
        #[derive(Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FaultEntry {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                $module: Option<$module::$variant>,
            )+
        }

        impl TryFrom<FaultEntry> for Fault {
            type Error = String;

            fn try_from(entry: FaultEntry) -> Result<Self, Self::Error> {
                let mut kinds = [$(entry.$module.map(Self::$variant)),+]
                    .into_iter()
                    .flatten();
                one_kind(kinds.next(), kinds.next())
            }
        }

        impl From<Fault> for FaultEntry {
            fn from(fault: Fault) -> Self {
                let mut entry = Self::default();
                match fault {
                    $(Fault::$variant(f) => entry.$module = Some(f),)+
                }
                entry
            }
        }

        impl From<Fault> for pb::FaultSpec {
            fn from(fault: Fault) -> Self {
                let kind = match fault {
                    $(Fault::$variant(f) => pb::fault_spec::Kind::$variant(CtlKind::to_wire(f)),)+
                };
                Self { kind: Some(kind) }
            }
        }

        impl TryFrom<&pb::FaultSpec> for Fault {
            type Error = WireError;

            fn try_from(fault: &pb::FaultSpec) -> Result<Self, WireError> {
                match fault.kind.as_ref() {
                    None => Err(WireError("a fault without a kind".to_owned())),
                    $(Some(pb::fault_spec::Kind::$variant(w)) => {
                        <$module::$variant as CtlKind>::from_wire(w).map(Self::$variant)
                    })+
                }
            }
        }

        /// Every kind's examples ([`CtlKind::examples`]), in the proto's order.
        #[cfg(test)]
        pub fn examples() -> Vec<pb::fault_spec::Kind> {
            let mut all = Vec::new();
            $(
                all.extend(
                    <$module::$variant as CtlKind>::examples()
                        .into_iter()
                        .map(pb::fault_spec::Kind::$variant),
                );
            )+
            all
        }

        // `faultctl inject <kind>`: a subcommand per kind, named after it
        // (`packet-loss`), whose help is its flags struct's doc comment.
        #[derive(Debug, clap::Subcommand)]
        pub enum InjectCommand {
            $($variant(<$module::$variant as CtlKind>::Args),)+
        }

        impl InjectCommand {
            pub fn into_experiment(self) -> anyhow::Result<spec::Experiment> {
                match self {
                    $(Self::$variant(args) => {
                        let Injection { fault, target, run } =
                            <$module::$variant as CtlKind>::from_args(args)?;
                        run.into_experiment(target, Fault::$variant(fault))
                    })+
                }
            }
        }
    };
}

faultline_proto::for_each_kind!(registry);

/// A fault entry holds exactly one kind: `first` and no `second`.
fn one_kind(first: Option<Fault>, second: Option<Fault>) -> Result<Fault, String> {
    match (first, second) {
        (Some(fault), None) => Ok(fault),
        (None, _) => {
            let (last, others) = kind::ALL.split_last().unwrap_or((&"", &[]));
            Err(format!(
                "a fault needs its kind as the key: {} or {last}",
                others.join(", ")
            ))
        }
        (Some(_), Some(_)) => {
            Err("a fault has exactly one kind: put each kind in its own list item".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `inject <kind>` for every kind, named after it with `-`, in the
    /// proto's order, each with its help.
    #[test]
    fn inject_has_a_subcommand_per_kind() {
        use clap::{Args as _, Subcommand as _};
        let inject = InjectCommand::augment_subcommands(clap::Command::new("inject"));
        let names: Vec<String> = inject
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        let kinds: Vec<String> = kind::ALL.iter().map(|k| k.replace('_', "-")).collect();
        assert_eq!(names, kinds);
        // A kind's flags struct without a doc comment would show the help
        // of a struct it flattens: the shared ones' are not a kind's.
        let shared: Vec<String> = [
            net::NetworkArgs::<net::CgroupOrInterface>::augment_args,
            net::NetworkArgs::<net::InterfaceOnly>::augment_args,
            net::PacketMatchArgs::augment_args,
            net::CgroupOrInterface::augment_args,
            net::InterfaceOnly::augment_args,
            crate::cli::inject::ExperimentArgs::augment_args,
            RunArgs::augment_args,
        ]
        .into_iter()
        .filter_map(|augment| {
            augment(clap::Command::new("shared"))
                .get_about()
                .map(ToString::to_string)
        })
        .collect();
        for sub in inject.get_subcommands() {
            let about = sub.get_about().map(ToString::to_string);
            assert!(
                about.as_ref().is_some_and(|about| !shared.contains(about)),
                "inject {} has no help of its own ({about:?}): its flags struct needs a doc comment",
                sub.get_name()
            );
        }
    }
}
