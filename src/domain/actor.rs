//! Who caused an event: recorded with every event in the log (SPEC §2 `actor`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    User,
    Operator,
    Service,
    Livekit,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Operator => "operator",
            ActorKind::Service => "service",
            ActorKind::Livekit => "livekit",
            ActorKind::System => "system",
        }
    }

    pub fn parse(raw: &str) -> ActorKind {
        match raw {
            "user" => ActorKind::User,
            "operator" => ActorKind::Operator,
            "service" => ActorKind::Service,
            "livekit" => ActorKind::Livekit,
            _ => ActorKind::System,
        }
    }
}

/// Who appended an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor { kind: ActorKind::System, id: "callstream".to_owned() }
    }
}
