//! The requests and replies on the control socket, one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::delivery::control::{Action, ActionResult, QueueEntry, Select};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// Every queued message.
    List,
    /// `action` on the messages `select` names.
    Act { action: Action, select: Select },
    /// Read the configuration again, as on SIGHUP.
    Reload,
}

/// What the relay answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "lowercase")]
pub enum Reply {
    List {
        entries: Vec<QueueEntry>,
    },
    Act {
        results: Vec<ActionResult>,
    },
    /// The reload is done: what it changed and what needs a restart.
    Reload {
        message: String,
    },
    /// The request could not be carried out, and why.
    Error {
        message: String,
    },
}
