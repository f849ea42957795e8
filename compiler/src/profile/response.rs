//! What driftwall does, in `enforce` mode, when a workload attempts something its
//! profile does not allow — chosen per rule class (exec, network, file).
//!
//! In `audit` mode every deviation is allowed and reported, whatever the response.

/// The response per rule class; each defaults to [`ResponseAction::Block`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Response {
    pub exec: ResponseAction,
    pub network: ResponseAction,
    pub file: ResponseAction,
}

/// One response.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ResponseAction {
    /// Refuse the operation inline (the syscall fails with `EPERM`) and report it.
    #[default]
    Block,
    /// Refuse it, report it, and kill the process with `SIGKILL`.
    Kill,
    /// Allow it and report it.
    Notify,
}
