//! The parts of a webhook a client sends, parsed into types the rest can trust: where deliveries
//! go ([`TargetUrl`]), which events they carry ([`EventSelection`]) and what signs them
//! ([`Secret`]). Each refusal names what is wrong, for a 400 naming the field.

use std::net::IpAddr;

use crate::vm::VmEvent;

pub use crate::outbound::is_private;

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Most event types one webhook may list.
pub const MAX_EVENT_TYPES: usize = 64;
/// Bounds of a client-chosen secret, in characters.
pub const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

/// An `http` or `https` URL with a host and no credentials (the URL is recorded in the event log;
/// credentials belong in the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(String);

impl TargetUrl {
    pub fn parse(raw: &str) -> Result<TargetUrl, String> {
        let url = crate::outbound::user_url(raw, MAX_URL_BYTES)?;
        Ok(TargetUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's address when the URL names one (`http://10.0.0.5/`), or `localhost`'s.
    pub fn literal_address(&self) -> Option<IpAddr> {
        crate::outbound::literal_address(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The VM event types a webhook receives: every one (`*`) or those it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSelection {
    Every,
    Only(Vec<&'static str>),
}

impl EventSelection {
    /// Parses `["*"]` or a non-empty list of VM event types (see `schemas/events/`).
    pub fn parse<S: AsRef<str>>(types: &[S]) -> Result<EventSelection, String> {
        if types.is_empty() {
            return Err("events must list at least one event type, or \"*\" for every one.".into());
        }
        if types.len() > MAX_EVENT_TYPES {
            return Err(format!(
                "events may list at most {MAX_EVENT_TYPES} event types."
            ));
        }
        let mut known = Vec::with_capacity(types.len());
        let mut every = false;
        for t in types {
            let t = t.as_ref();
            if t == "*" {
                every = true;
                continue;
            }
            // Checked beside "*" too: a name that is not an event type is a mistake either way.
            let Some(name) = VmEvent::TYPE_NAMES.iter().find(|n| **n == t) else {
                return Err(format!(
                    "'{}' is not a VM event type (VmCreated, VmStarted, ... or \"*\").",
                    t.chars().take(64).collect::<String>()
                ));
            };
            known.push(*name);
        }
        if every {
            return Ok(EventSelection::Every);
        }
        // The catalog's order, once each.
        let only = VmEvent::TYPE_NAMES
            .iter()
            .copied()
            .filter(|n| known.contains(n))
            .collect();
        Ok(EventSelection::Only(only))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventSelection::Every => true,
            EventSelection::Only(types) => types.contains(&event_type),
        }
    }

    /// As stored and shown.
    pub fn ids(&self) -> Vec<String> {
        match self {
            EventSelection::Every => vec!["*".to_string()],
            EventSelection::Only(types) => types.iter().map(|t| (*t).to_string()).collect(),
        }
    }
}

/// The key deliveries are signed with: 16 to 256 visible ASCII characters, or one the server
/// makes (`whsec_` and 64 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn parse(raw: &str) -> Result<Secret, String> {
        let chars = raw.chars().count();
        if !SECRET_CHARS.contains(&chars) {
            return Err(format!(
                "secret must have {} to {} characters.",
                SECRET_CHARS.start(),
                SECRET_CHARS.end()
            ));
        }
        if !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err("secret may hold only visible ASCII characters (no spaces).".into());
        }
        Ok(Secret(raw.to_string()))
    }

    pub fn generate() -> Secret {
        let bytes: [u8; 32] = rand::random();
        Secret(format!("whsec_{}", hex::encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}
