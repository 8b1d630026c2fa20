//! The in-call action policy: which types exist, which are sensitive (need the owner's
//! confirmation), which roles may request them, per-session limits and parameter constraints.
//! Pure: the caller supplies the counts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ErrorCode;
use super::outbound::Allowlist;
use super::principal::Role;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub id: String,
    pub version: u64,
    /// Action type → roles allowed to request it. A type not listed is unsupported.
    pub roles: std::collections::BTreeMap<String, Vec<Role>>,
    /// Types that need the session owner's confirmation before they run.
    pub sensitive_types: Vec<String>,
    pub limits: Limits,
    /// Targets outbound actions may reach (`webhook.post` URLs); the grammar is in
    /// `domain::outbound`. Empty by default: nothing outside is reachable until listed.
    pub allowed_hosts: Vec<String>,
    pub confirmation_ttl_secs: u64,
    /// `allowed_hosts`, parsed.
    #[serde(skip)]
    pub allowlist: Allowlist,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    pub max_actions_per_session: u64,
    pub max_actions_per_minute: u64,
}

/// What the policy needs to know about the session's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub actions_in_session: u64,
    pub actions_last_minute: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved { rule: &'static str },
    Blocked { code: ErrorCode, reason: String },
    NeedsConfirmation,
    Unsupported,
}

pub const BUILT_IN: &str = include_str!("../../policy/default.json");

impl Policy {
    /// The built-in policy (`policy/default.json`): safe defaults.
    pub fn built_in() -> Policy {
        // The file is compiled in and parsed by a unit test; failing here is a build defect.
        Policy::parse(BUILT_IN).unwrap_or_else(|e| panic!("policy/default.json is invalid: {e}"))
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut policy: Policy = serde_json::from_str(text).map_err(|e| e.to_string())?;
        policy.allowlist = Allowlist::parse(&policy.allowed_hosts)?;
        if policy.id.is_empty() || policy.version == 0 {
            return Err("`id` must be set and `version` ≥ 1".into());
        }
        if let Some(unknown) = policy.sensitive_types.iter().find(|t| !policy.roles.contains_key(*t)) {
            return Err(format!("sensitive type `{unknown}` has no `roles` entry"));
        }
        if !(1..=86_400).contains(&policy.confirmation_ttl_secs) {
            return Err("`confirmationTtlSecs` must be 1–86400".into());
        }
        Ok(policy)
    }

    pub fn is_sensitive(&self, action_type: &str) -> bool {
        self.sensitive_types.iter().any(|t| t == action_type)
    }

    /// Decide a new request. Order: supported → role → limits → parameters → sensitivity.
    pub fn evaluate(
        &self,
        roles: &[Role],
        action_type: &str,
        params: &Value,
        usage: Usage,
        supported: bool,
    ) -> Verdict {
        let Some(allowed) = self.roles.get(action_type).filter(|_| supported) else { return Verdict::Unsupported };
        if !roles.iter().any(|r| allowed.contains(r)) {
            return Verdict::Blocked {
                code: ErrorCode::RoleNotAllowed,
                reason: format!("your roles may not request `{action_type}`"),
            };
        }
        if usage.actions_in_session >= self.limits.max_actions_per_session {
            return Verdict::Blocked {
                code: ErrorCode::SessionActionLimit,
                reason: format!("the session reached its limit of {} actions", self.limits.max_actions_per_session),
            };
        }
        if usage.actions_last_minute >= self.limits.max_actions_per_minute {
            return Verdict::Blocked {
                code: ErrorCode::SessionActionRate,
                reason: format!(
                    "the session may request at most {} actions a minute",
                    self.limits.max_actions_per_minute
                ),
            };
        }
        if let Some(url) = params.get("url").and_then(Value::as_str)
            && let Err((code, reason)) = self.allowlist.admit(url)
        {
            return Verdict::Blocked { code, reason };
        }
        if self.is_sensitive(action_type) {
            Verdict::NeedsConfirmation
        } else {
            Verdict::Approved { rule: "allowed-by-role" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn given() -> Policy {
        Policy::built_in()
    }

    #[test]
    fn the_built_in_policy_parses_and_is_safe() {
        let policy = given();
        assert!(Policy::parse(BUILT_IN).is_ok());
        for sensitive in ["message.send", "email.send", "call.transfer"] {
            assert!(policy.is_sensitive(sensitive), "{sensitive}");
        }
        assert!(!policy.is_sensitive("note.create"));
    }

    #[test]
    fn when_a_note_is_requested_by_a_user_then_it_is_approved() {
        let verdict = given().evaluate(&[Role::User], "note.create", &json!({"text": "x"}), Usage::default(), true);
        assert_eq!(verdict, Verdict::Approved { rule: "allowed-by-role" });
    }

    #[test]
    fn when_a_send_is_requested_then_it_needs_confirmation() {
        let verdict =
            given().evaluate(&[Role::User], "message.send", &json!({"to": "a", "text": "b"}), Usage::default(), true);
        assert_eq!(verdict, Verdict::NeedsConfirmation);
    }

    #[test]
    fn when_the_role_may_not_then_it_is_blocked() {
        let verdict = given().evaluate(&[Role::Operator], "note.create", &json!({}), Usage::default(), true);
        assert!(matches!(verdict, Verdict::Blocked { code: ErrorCode::RoleNotAllowed, .. }));
    }

    #[test]
    fn when_limits_are_reached_then_it_is_blocked() {
        let policy = given();
        let full = Usage { actions_in_session: policy.limits.max_actions_per_session, actions_last_minute: 0 };
        assert!(matches!(
            policy.evaluate(&[Role::User], "note.create", &json!({}), full, true),
            Verdict::Blocked { code: ErrorCode::SessionActionLimit, .. }
        ));
        let busy = Usage { actions_in_session: 0, actions_last_minute: policy.limits.max_actions_per_minute };
        assert!(matches!(
            policy.evaluate(&[Role::User], "note.create", &json!({}), busy, true),
            Verdict::Blocked { code: ErrorCode::SessionActionRate, .. }
        ));
    }

    #[test]
    fn when_a_url_leaves_the_allowlist_then_it_is_blocked() {
        assert!(given().allowed_hosts.is_empty(), "nothing outside is reachable by default");
        let mut policy: Value = serde_json::from_str(BUILT_IN).expect("json");
        policy["allowedHosts"] = json!(["http://127.0.0.1:9"]);
        let policy = Policy::parse(&policy.to_string()).expect("valid");
        let outside = json!({"url": "https://evil.example/x", "body": {}});
        assert!(matches!(
            policy.evaluate(&[Role::Service], "webhook.post", &outside, Usage::default(), true),
            Verdict::Blocked { code: ErrorCode::HostNotAllowed, .. }
        ));
        let sneaky = json!({"url": "http://evil.example\\@127.0.0.1:9/x"});
        assert!(matches!(
            policy.evaluate(&[Role::Service], "webhook.post", &sneaky, Usage::default(), true),
            Verdict::Blocked { code: ErrorCode::HostNotAllowed, .. }
        ));
        let inside = json!({"url": "http://127.0.0.1:9/hook", "body": {}});
        assert_eq!(
            policy.evaluate(&[Role::Service], "webhook.post", &inside, Usage::default(), true),
            Verdict::NeedsConfirmation
        );
        assert!(matches!(
            policy.evaluate(&[Role::User], "webhook.post", &inside, Usage::default(), true),
            Verdict::Blocked { code: ErrorCode::RoleNotAllowed, .. }
        ));
    }

    #[test]
    fn when_the_type_is_unknown_then_it_is_unsupported_whoever_asks() {
        for roles in [vec![Role::User], vec![Role::Operator]] {
            assert_eq!(given().evaluate(&roles, "teleport", &json!({}), Usage::default(), true), Verdict::Unsupported);
        }
        assert_eq!(
            given().evaluate(&[Role::User], "email.send", &json!({}), Usage::default(), false),
            Verdict::Unsupported
        );
    }
}
