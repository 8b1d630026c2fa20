//! Who is calling, and what that allows (SPEC §3).

use serde::{Deserialize, Serialize};

use super::ids::{TenantId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Operator,
    Service,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "user" => Some(Role::User),
            "operator" => Some(Role::Operator),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub roles: Vec<Role>,
}

/// Why a principal may not do something. `NotVisible` must be reported exactly like a missing
/// resource so ids do not leak across owners and tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NotVisible,
    Role,
}

/// The owner and tenant of a session, as far as access is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    pub tenant_id: &'a str,
    pub owner_id: &'a str,
}

/// How a principal reaches a session it may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAccess {
    Owner,
    Operator,
    Service,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Read access: the owner (a `user`), or an operator/service of the same tenant.
    pub fn session_access(&self, session: Ownership<'_>) -> Result<SessionAccess, Denied> {
        if session.tenant_id != self.tenant_id.as_str() {
            return Err(Denied::NotVisible);
        }
        if self.has(Role::User) && session.owner_id == self.user_id.as_str() {
            Ok(SessionAccess::Owner)
        } else if self.has(Role::Service) {
            Ok(SessionAccess::Service)
        } else if self.has(Role::Operator) {
            Ok(SessionAccess::Operator)
        } else {
            Err(Denied::NotVisible)
        }
    }

    /// Append access: the owner or a `service`; operators can look but not write.
    pub fn session_writer(&self, session: Ownership<'_>) -> Result<SessionAccess, Denied> {
        match self.session_access(session)? {
            SessionAccess::Operator => Err(Denied::Role),
            access => Ok(access),
        }
    }

    /// Creating a session makes the caller its owner: for users and services.
    pub fn may_create_sessions(&self) -> Result<(), Denied> {
        if self.has(Role::User) || self.has(Role::Service) { Ok(()) } else { Err(Denied::Role) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, tenant: &str, roles: &[Role]) -> Principal {
        Principal {
            user_id: UserId::parse(user).expect("user"),
            tenant_id: TenantId::parse(tenant).expect("tenant"),
            roles: roles.to_vec(),
        }
    }

    const SESSION: Ownership<'static> = Ownership { tenant_id: "t1", owner_id: "alice" };

    #[test]
    fn owners_see_and_write_their_sessions() {
        let alice = principal("alice", "t1", &[Role::User]);
        assert_eq!(alice.session_access(SESSION), Ok(SessionAccess::Owner));
        assert_eq!(alice.session_writer(SESSION), Ok(SessionAccess::Owner));
    }

    #[test]
    fn other_users_and_tenants_see_nothing() {
        assert_eq!(principal("bob", "t1", &[Role::User]).session_access(SESSION), Err(Denied::NotVisible));
        assert_eq!(principal("alice", "t2", &[Role::User]).session_access(SESSION), Err(Denied::NotVisible));
        assert_eq!(principal("ops", "t2", &[Role::Operator]).session_access(SESSION), Err(Denied::NotVisible));
    }

    #[test]
    fn operators_read_but_do_not_write() {
        let ops = principal("ops", "t1", &[Role::Operator]);
        assert_eq!(ops.session_access(SESSION), Ok(SessionAccess::Operator));
        assert_eq!(ops.session_writer(SESSION), Err(Denied::Role));
        assert_eq!(ops.may_create_sessions(), Err(Denied::Role));
    }

    #[test]
    fn services_write_in_their_tenant() {
        let agent = principal("agent", "t1", &[Role::Service]);
        assert_eq!(agent.session_writer(SESSION), Ok(SessionAccess::Service));
    }
}
